"""Secrets of the channels' far ends (Redis, MQTT), read from the environment when serve starts, and the TLS
files beside them, checked before anything connects.

Why only the environment: a config file is copied, committed and pasted into tickets; a variable is not. The
variable's *name* may be shown anywhere (errors say which one to fix); its value never is: `Credentials` keeps it
out of its repr, and the errors of the links built from it name the variable, not the secret.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from stream.config.channels import TlsFiles
from stream.live.bus.channels.base import ChannelError


@dataclass(frozen=True)
class Credentials:
    """What a link signs in with, resolved; `user_env`/`password_env` name where they came from, for errors."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    user_env: str | None = None
    password_env: str | None = None

    def hint(self) -> str:
        """Which variables to check, for a refusal's message."""
        names = [n for n in (self.user_env, self.password_env) if n]
        return f"check {' and '.join(names)}" if names else "no credentials were configured"


def env_value(var: str | None, what: str, env: dict[str, str] | None = None, empty_ok: bool = False) -> str | None:
    """The value of `var` (None when no variable is configured); unset (or empty, unless `empty_ok`) raises
    ChannelError naming the variable, never falling back to an empty secret."""
    if var is None:
        return None
    value = (os.environ if env is None else env).get(var)
    if value is None or (not value and not empty_ok):
        raise ChannelError(f"{what}: environment variable {var} is not set{'' if empty_ok else ' or empty'}")
    return value


def read_credentials(what: str, username_env: str | None, password_env: str | None,
                     env: dict[str, str] | None = None) -> Credentials:
    return Credentials(env_value(username_env, f"{what} (username_env)", env),
                       env_value(password_env, f"{what} (password_env)", env, empty_ok=True),
                       username_env, password_env)


def check_tls_files(what: str, files: TlsFiles) -> None:
    """Every configured TLS file exists and loads (a CA bundle, a certificate with its key), so a wrong path is
    said at start, in words, and not as a handshake failure retried forever."""
    for name in ("ca_file", "cert_file", "key_file"):
        path: Path | None = getattr(files, name)
        if path is not None and not Path(path).is_file():
            raise ChannelError(f"{what}: {name} {path} is not a readable file")
    context = ssl.create_default_context()
    try:
        if files.ca_file is not None:
            context.load_verify_locations(cafile=str(files.ca_file))
        if files.cert_file is not None:
            # an encrypted key is refused here rather than prompting for its passphrase on serve's terminal
            context.load_cert_chain(str(files.cert_file), str(files.key_file), password=lambda: b"")
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ChannelError(f"{what}: cannot load the TLS files ({type(exc).__name__}: {exc})") from None
