"""Profiles in ``~/.iron/config.toml`` (or ``$IRON_CONFIG``): a server URL and its credentials each.

The file holds tokens, so it is only ever written whole, as a new file created with mode 0600
and renamed over the old one: no reader sees half a file, and it is never readable by others,
not even for a moment. Writers take a lock first, so two ``iron`` processes refreshing the same
session do not both spend its (single-use) refresh token.
"""

import contextlib
import fcntl
import os
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import msgspec
import tomli_w

DEFAULT_PROFILE = "default"


class ConfigError(Exception):
    """The config file cannot be read; the message names the file and the problem."""


class Profile(msgspec.Struct, kw_only=True, omit_defaults=True):
    url: str | None = None
    email: str | None = None
    user_token: str | None = None
    refresh_token: str | None = None
    expires_at: str | None = None  # of user_token, ISO 8601 as the server said

    def logged_out(self) -> "Profile":
        return Profile(url=self.url, email=self.email)


class Config(msgspec.Struct, kw_only=True, omit_defaults=True):
    default_profile: str = DEFAULT_PROFILE
    profiles: dict[str, Profile] = {}


def path() -> Path:
    return Path(os.environ.get("IRON_CONFIG") or Path.home() / ".iron" / "config.toml").expanduser()


def load(file: Path) -> Config:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from None
    try:
        return msgspec.convert(tomllib.loads(text), Config)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{file} is not a valid iron config: {exc}") from None


def save(file: Path, config: Config) -> None:
    """Replace the file atomically with a new one that only its owner can read."""
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(tomli_w.dumps(msgspec.to_builtins(config)).encode())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, file)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def locked(file: Path) -> Iterator[None]:
    """Exclusive among ``iron`` processes using this file, for a read-change-write."""
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(file.with_name(file.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def update_profile(file: Path, name: str, profile: Profile) -> None:
    with locked(file):
        config = load(file)
        config.profiles[name] = profile
        save(file, config)
