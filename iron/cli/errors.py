"""Failures and exit codes: 1 the API refused, 2 a usage or setup error, 3 cannot reach the server.

Each prints as the parity standard's error block (message, code, status, every field error,
the request id and a hint) on stderr; with ``--json`` the API's error body also goes to stdout,
unchanged, for scripts.
"""

from typing import IO, Any

import click
import httpx
from rich.console import Console

EXIT_API = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class Failure(click.ClickException):
    exit_code = EXIT_API

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        status: int | None = None,
        fields: dict[str, str] | None = None,
        request_id: str | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.hint, self.code, self.status = hint, code, status
        self.fields = fields or {}
        self.request_id = request_id
        self.body = body  # printed to stdout with --json

    def show(self, file: IO[Any] | None = None) -> None:
        if self.body is not None:
            click.echo(self.body)
        err = Console(stderr=True, highlight=False)
        err.print(f"[bold red]Error:[/] {self.message}", markup=True, soft_wrap=True)
        for label, value in (("Code", self.code), ("Status", self.status), ("Request", self.request_id)):
            if value is not None:
                err.print(f"{label}: {value}", markup=False)
        if self.fields:
            err.print("Fields:", markup=False)
            for name, problem in self.fields.items():
                err.print(f"  {name}: {problem}", markup=False, soft_wrap=True)
        if self.hint:
            err.print(f"\n{self.hint}", markup=False, soft_wrap=True)


class SetupError(Failure):
    """Nothing was sent: not logged in, a bad config file, a bad URL."""

    exit_code = EXIT_USAGE


class Unreachable(Failure):
    exit_code = EXIT_UNREACHABLE

    def __init__(self, url: str, exc: httpx.TransportError) -> None:
        reason = str(exc) or type(exc).__name__
        super().__init__(
            f"Cannot connect to the control plane at {url} ({reason})",
            hint="Is it running there? Set the URL with 'iron login --url URL', 'iron config set-url' "
            "or IRON_URL.",
        )


def _hint(status: int, command: str | None, headers: httpx.Headers) -> str | None:
    """What to do next; ``command`` is the failed one's ``RESOURCE ACTION``, if any."""
    resource = f"iron {command.split()[0]}" if command else None
    if status == 400:
        usage = f" ('iron {command} --help' lists the options)" if command else ""
        return f"Fix the fields above and try again{usage}."
    if status == 401:
        return "Run 'iron login' to sign in again (or check the API token you gave)."
    if status == 403:
        return "Your role does not allow this; ask an admin."
    if status == 404:
        return f"Run '{resource} list' to see what exists." if resource else None
    if status == 409:
        return f"It changed in the meantime; look at it again with '{resource} get'." if resource else None
    if status == 429:
        return f"Too many requests: retry in {headers.get('Retry-After', 'a few')} seconds."
    if status >= 500:
        return "The server failed; try again later, and quote the request id to its operators."
    return None


def api_failure(response: httpx.Response, command: str | None, json_output: bool) -> Failure:
    """The failure the API answered, from its error body (or its status line, if it sent none)."""
    try:
        error = response.json()["error"]
        message, code = str(error["message"]), str(error["code"])
    except (ValueError, KeyError, TypeError):
        error, message, code = {}, f"HTTP {response.status_code} {response.reason_phrase}", "HTTP_ERROR"
    fields = error.get("fields")
    return Failure(
        message,
        hint=_hint(response.status_code, command, response.headers),
        code=code,
        status=response.status_code,
        fields={str(k): str(v) for k, v in fields.items()} if isinstance(fields, dict) else None,
        request_id=error.get("request_id") or response.headers.get("X-Request-ID"),
        body=response.text if json_output else None,
    )
