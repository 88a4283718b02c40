"""``iron``: the entry point. Exit codes: 0 ok, 1 the API refused, 2 usage error, 3 cannot connect."""

import click
from click.shell_completion import get_completion_class

import iron
from iron.cli import config
from iron.cli.client import Target
from iron.cli.commands import resource_groups
from iron.cli.session import config_group, login, logout, whoami

COMPLETE_VAR = "_IRON_COMPLETE"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--profile", envvar="IRON_PROFILE", help="The config profile to use [default: the config's default]"
)
@click.option("--url", envvar="IRON_URL", help="The control plane's URL, instead of the profile's")
@click.option("--api-token", envvar="IRON_API_TOKEN", help="An API token (apitok_...) instead of the login")
@click.version_option(iron.__version__, prog_name="iron")
@click.pass_context
def cli(ctx: click.Context, profile: str | None, url: str | None, api_token: str | None) -> None:
    """Iron Cage from the command line: every admin operation of the control plane.

    Start with 'iron login --url URL', then for example 'iron agents list'. Every
    command takes --json to print the API's answer as it came.
    """
    ctx.obj = Target(config_file=config.path(), profile=profile, url=url, api_token=api_token)


@cli.command(help='Print the shell completion script, e.g. eval "$(iron completion bash)".')
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    script = get_completion_class(shell)
    assert script is not None
    click.echo(script(cli, {}, "iron", COMPLETE_VAR).source())


for command in (*resource_groups(), login, logout, whoami, config_group):
    cli.add_command(command)


def main() -> None:
    cli.main(prog_name="iron", complete_var=COMPLETE_VAR)
