"""One click command per entry of the table: parse, send, show. No business logic: the API decides."""

import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TransferSpeedColumn

from iron.cli import output
from iron.cli.client import Api, Target
from iron.cli.operations import OPERATIONS, PAGE, RESOURCES, Op
from iron.cli.params import Call, body_options, call_of, path_arguments, query_option

_JSON_DECLS = ("--json", "json_output")
_JSON_ATTRS: dict[str, Any] = {"is_flag": True, "help": "Print the API's response body exactly as it came"}
json_flag = click.option(*_JSON_DECLS, **_JSON_ATTRS)  # for hand-written commands


def json_option() -> click.Option:
    return click.Option(_JSON_DECLS, **_JSON_ATTRS)


class ApiCommand(click.Command):
    """A command that calls one API operation (``op``)."""

    def __init__(self, op: Op) -> None:
        params = [
            *path_arguments(op.path),
            *(query_option(query) for query in (*op.query, *(PAGE if op.paged else ()))),
            *(body_options(op.body) if op.body else []),
            json_option(),
        ]
        if op.download:
            params.append(
                click.Option(
                    ["--output", "-o", "output_file"],
                    type=click.Path(dir_okay=False, writable=True, path_type=Path),
                    help="Write to this file (default: standard output)",
                )
            )
        super().__init__(
            op.action,
            params=params,
            callback=self.run,
            help=f"{op.summary}\n\nCalls: {op.method} {op.path}",
            short_help=op.summary,
        )
        self.op = op

    def run(self, json_output: bool, output_file: Path | None = None, **values: Any) -> None:
        op = self.op
        call = call_of(self.params, values)
        target = click.get_current_context().find_object(Target)
        assert target is not None
        path = op.path.format(**{name: quote(value, safe="") for name, value in call.path.items()})
        with Api(target, command=f"{op.resource} {op.action}", json_output=json_output) as api:
            if op.download:
                _download(api, op, path, call, output_file, json_output)
                return
            response = api.request(op.method, path, params=call.query, body=call.body if op.body else None)
        if json_output:
            if response.content:
                click.echo(response.text)
        elif response.content:
            output.render(response.json(), op.rows, op.columns)
        else:
            output.console().print(f"Done ({response.status_code} {response.reason_phrase}).")


def _download(api: Api, op: Op, path: str, call: Call, output_file: Path | None, quiet: bool) -> None:
    """Stream the body to a file or stdout, with progress on stderr (none with --json, or onto a tty)."""
    err = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("Exporting"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    hidden = quiet or (output_file is None and sys.stdout.isatty())
    written = 0
    with api.stream(op.method, path, params=call.query) as response:
        size = response.headers.get("Content-Length")
        sink = output_file.open("wb") if output_file else sys.stdout.buffer
        try:
            with Progress(*columns, console=err, disable=hidden) as progress:
                task = progress.add_task("export", total=int(size) if size else None)
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    written += len(chunk)
                    progress.advance(task, len(chunk))
        finally:
            if output_file:
                sink.close()
            else:
                sink.flush()
    if output_file and not quiet:
        err.print(f"Saved {written:,} bytes to {output_file}", highlight=False, markup=False, soft_wrap=True)


def resource_groups() -> list[click.Group]:
    groups = {name: click.Group(name, help=text) for name, text in RESOURCES.items()}
    for op in OPERATIONS:
        groups[op.resource].add_command(ApiCommand(op))
    return list(groups.values())
