"""One command's connection to the control plane: the profile's URL and token, refreshed when due.

The user token is refreshed shortly before it expires, or when the server says it has
(``AUTH_TOKEN_EXPIRED``), and the request is sent again once. Refresh tokens are single-use
(the server rotates them and treats a reused one as theft), so the refresh runs under the
config file's lock and first looks whether another ``iron`` process has already refreshed.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import msgspec

import iron
from control_plane.auth.schemas import LoginResponse, RefreshRequest
from iron.cli import config
from iron.cli.config import Profile
from iron.cli.errors import SetupError, Unreachable, api_failure

DEFAULT_URL = "http://127.0.0.1:8080"
REFRESH_AHEAD = timedelta(seconds=30)
TIMEOUT_S = 30.0
USER_AGENT = f"iron-cli/{iron.__version__}"
REFRESH_PATH = "/api/v1/auth/refresh"


@dataclass(frozen=True, slots=True)
class Target:
    """The global options: which config file and profile, and overrides of its URL and token."""

    config_file: Path
    profile: str | None = None  # None: the config's default profile
    url: str | None = None
    api_token: str | None = None


def session_profile(profile: Profile, session: LoginResponse) -> Profile:
    """The profile holding a new session from login or refresh."""
    return Profile(
        url=profile.url,
        email=session.user.email,
        user_token=session.user_token,
        refresh_token=session.refresh_token,
        expires_at=session.expires_at,
    )


def _due(expires_at: str | None) -> bool:
    if expires_at is None:
        return False
    try:
        moment = datetime.fromisoformat(expires_at)
    except ValueError:
        return True
    return moment - REFRESH_AHEAD <= datetime.now(UTC)


def _error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


class Api:
    def __init__(self, target: Target, *, command: str | None = None, json_output: bool = False) -> None:
        self.target, self.command, self.json_output = target, command, json_output
        try:
            loaded = config.load(target.config_file)
        except config.ConfigError as exc:
            raise SetupError(str(exc), hint="Fix or delete the file, then run 'iron login'.") from None
        self.profile_name = target.profile or loaded.default_profile
        self.profile = loaded.profiles.get(self.profile_name, Profile())
        self.url = (target.url or self.profile.url or DEFAULT_URL).rstrip("/")
        try:
            self.http = httpx.Client(base_url=self.url, timeout=TIMEOUT_S, headers={"User-Agent": USER_AGENT})
        except httpx.InvalidURL as exc:
            raise SetupError(f"Invalid control-plane URL {self.url!r}: {exc}") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.http.close()

    def request(
        self, method: str, path: str, *, params: Any = None, body: Any = None, auth: bool = True
    ) -> httpx.Response:
        """The response of a successful call; a failure raises :class:`iron.cli.errors.Failure`."""
        return self._send(method, path, params, body, auth, stream=False)

    @contextlib.contextmanager
    def stream(self, method: str, path: str, *, params: Any = None) -> Iterator[httpx.Response]:
        """A successful response whose body is read as it arrives."""
        response = self._send(method, path, params, None, True, stream=True)
        try:
            yield response
        finally:
            response.close()

    def _send(
        self, method: str, path: str, params: Any, body: Any, auth: bool, *, stream: bool
    ) -> httpx.Response:
        token = self._token() if auth else None
        response = self._transmit(method, path, params, body, token, stream)
        if auth and self._expired(response) and self.target.api_token is None:
            token = self._refresh(stale=token)
            response = self._transmit(method, path, params, body, token, stream)
        if response.is_error:
            response.read()
            raise api_failure(response, self.command, self.json_output)
        return response

    def _transmit(
        self, method: str, path: str, params: Any, body: Any, token: str | None, stream: bool
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = self.http.build_request(method, path, params=params, json=body, headers=headers)
        try:
            return self.http.send(request, stream=stream)
        except httpx.UnsupportedProtocol as exc:
            raise SetupError(f"Invalid control-plane URL {self.url!r}: {exc}") from None
        except httpx.TransportError as exc:
            raise Unreachable(self.url, exc) from None

    @staticmethod
    def _expired(response: httpx.Response) -> bool:
        if response.status_code != 401:
            return False
        response.read()
        return _error_code(response) == "AUTH_TOKEN_EXPIRED"

    def _token(self) -> str:
        if self.target.api_token:
            return self.target.api_token
        if not self.profile.user_token:
            raise SetupError(
                f"Not logged in (profile '{self.profile_name}', {self.url})",
                hint="Run 'iron login' first, or give an API token with --api-token or IRON_API_TOKEN.",
            )
        if _due(self.profile.expires_at) and self.profile.refresh_token:
            return self._refresh(stale=self.profile.user_token)
        return self.profile.user_token

    def _refresh(self, stale: str | None) -> str:
        """A fresh user token: another process's, if it refreshed meanwhile, or a new session's."""
        file = self.target.config_file
        with config.locked(file):
            current = config.load(file)
            profile = current.profiles.get(self.profile_name, Profile())
            if profile.user_token and profile.user_token != stale and not _due(profile.expires_at):
                self.profile = profile
                return profile.user_token
            if not profile.refresh_token:
                raise SetupError("Your session has expired", hint="Run 'iron login' to sign in again.")
            body = msgspec.to_builtins(RefreshRequest(refresh_token=profile.refresh_token))
            response = self._transmit("POST", REFRESH_PATH, None, body, None, stream=False)
            if response.is_error:
                failure = api_failure(response, None, self.json_output)
                if response.status_code == 401:  # the session is over: forget its tokens
                    current.profiles[self.profile_name] = profile.logged_out()
                    config.save(file, current)
                    failure.hint = "Your session has ended; run 'iron login' to sign in again."
                raise failure
            session = msgspec.json.decode(response.content, type=LoginResponse)
            self.profile = current.profiles[self.profile_name] = session_profile(profile, session)
            config.save(file, current)
        return session.user_token
