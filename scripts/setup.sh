#!/usr/bin/env bash
# Create or refresh .venv with everything dfstream needs.
#   scripts/setup.sh          runtime only (what `serve` and `scan` import)
#   scripts/setup.sh test     runtime + reference frameworks and system packages for the tests
# Idempotent: a stamp keyed by the hash of the install inputs skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-runtime}"
venv="${DFSTREAM_VENV:-.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

inputs_hash=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)
stamp="$venv/.installed-$profile-$inputs_hash"
[ -f "$stamp" ] && exit 0

echo "dfstream setup ($profile): installing into $venv" >&2
if [ "$profile" = test ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # System packages the tests drive for real (none yet needed beyond ffmpeg's libraries in PyAV).
    :
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt)
extras=""
[ "$profile" = test ] && extras="[test]"
"${pip[@]}" -e ".$extras"
"${pip[@]}" --no-deps facenet-pytorch
rm -f "$venv"/.installed-"$profile"-*
touch "$stamp"
