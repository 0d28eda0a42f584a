#!/usr/bin/env bash
# Create or refresh .venv with everything dfstream needs.
#   scripts/setup.sh          runtime only (what `serve` and `scan` import)
#   scripts/setup.sh test     runtime + reference frameworks and system packages for the tests, and the docs
#                             site's packages (tests/test_docs.py builds it)
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
# the test profile installs everything the runtime one does
[ "$profile" = runtime ] && [ -f "$venv/.installed-test-$inputs_hash" ] && exit 0

echo "dfstream setup ($profile): installing into $venv" >&2
if [ "$profile" = test ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # System packages the tests drive for real: gst-rtsp-server, its GObject bindings for /usr/bin/python3 and
    # the GStreamer elements tests/support/rtsp_server.py uses (a real RTSP camera on loopback). Installed only if missing.
    # redis-server: the Redis bus tests start a real one on a loopback port.
    # mosquitto: the MQTT channel tests start a real broker on a loopback port (tests/support/mqtt_broker.py).
    # chromium: the browser tests drive Debian's Chromium headless with Playwright (tests/support/browser.py; no browser download).
    apt_packages=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad,ugly} gstreamer1.0-libav
                  redis-server mosquitto chromium)
    missing=()
    for pkg in "${apt_packages[@]}"; do
        status=$(dpkg -s "$pkg" 2>/dev/null | sed -n 's/^Status: //p' || true)
        [ "$status" = "install ok installed" ] || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt)
extras=""
[ "$profile" = test ] && extras="[test,docs]"
"${pip[@]}" -e ".$extras"
"${pip[@]}" --no-deps facenet-pytorch
rm -f "$venv"/.installed-"$profile"-*
touch "$stamp"
