"""``iron login``, ``logout``, ``whoami`` and ``config``: the session and the profiles it lives in."""

from dataclasses import replace
from typing import Any

import click
import msgspec

from control_plane.auth.schemas import LoginRequest, LoginResponse, ValidateResponse
from iron.cli import config, output
from iron.cli.client import Api, Target, session_profile
from iron.cli.commands import json_flag
from iron.cli.config import Profile
from iron.cli.errors import Failure, SetupError

LOGIN = "/api/v1/auth/login"
LOGOUT = "/api/v1/auth/logout"
VALIDATE = "/api/v1/auth/validate"

pass_target = click.make_pass_decorator(Target)


@click.command(help=f"Sign in and keep the session in the profile.\n\nCalls: POST {LOGIN}")
@click.option(
    "--url", help="The control plane's URL, saved in the profile [default: the profile's, or IRON_URL]"
)
@click.option("--email", help="Default: the profile's, or a prompt")
@click.option("--password", envvar="IRON_PASSWORD", help="Default: IRON_PASSWORD, or a hidden prompt")
@json_flag
@pass_target
def login(
    target: Target, url: str | None, email: str | None, password: str | None, json_output: bool
) -> None:
    with Api(replace(target, url=url or target.url, api_token=None), json_output=json_output) as api:
        email = email or click.prompt("Email", default=api.profile.email)
        password = password or click.prompt("Password", hide_input=True)
        body = msgspec.to_builtins(LoginRequest(email=str(email), password=password))
        response = api.request("POST", LOGIN, body=body, auth=False)
        session = msgspec.json.decode(response.content, type=LoginResponse)
        profile = session_profile(msgspec.structs.replace(api.profile, url=api.url), session)
        config.update_profile(target.config_file, api.profile_name, profile)
    if json_output:
        click.echo(response.text)
        return
    output.console().print(
        f"Logged in to {api.url} as {session.user.email} ({session.user.role}); profile '{api.profile_name}'."
    )


def _login_only(target: Target) -> None:
    if target.api_token:
        raise SetupError(
            "An API token is not logged out", hint="Revoke it with 'iron api-tokens revoke TOKEN_ID'."
        )


@click.command(help=f"End the session on the server and forget its tokens here.\n\nCalls: POST {LOGOUT}")
@json_flag
@pass_target
def logout(target: Target, json_output: bool) -> None:
    _login_only(target)
    with Api(target, json_output=json_output) as api:
        if not api.profile.user_token:
            output.console().print(f"Not logged in (profile '{api.profile_name}').")
            return
        try:
            api.request("POST", LOGOUT)
        except Failure as failure:
            if failure.status != 401:  # 401: the session had ended already, which is what we want
                raise
        config.update_profile(target.config_file, api.profile_name, api.profile.logged_out())
    if not json_output:
        output.console().print(f"Logged out of {api.url} (profile '{api.profile_name}').")


@click.command(help=f"Show who you are signed in as, and where.\n\nCalls: POST {VALIDATE}")
@json_flag
@pass_target
def whoami(target: Target, json_output: bool) -> None:
    with Api(target, json_output=json_output) as api:
        response = api.request("POST", VALIDATE)
    if json_output:
        click.echo(response.text)
    answer = msgspec.json.decode(response.content, type=ValidateResponse)
    if not answer.valid or answer.user is None:
        raise Failure("The token is no longer valid", hint="Run 'iron login' to sign in again.")
    if not json_output:
        facts: dict[str, Any] = {"profile": api.profile_name, "url": api.url, **msgspec.to_builtins(answer)}
        del facts["valid"]
        output.console().print(output.fields(facts))


@click.group(name="config", help="The profiles in the config file (IRON_CONFIG, or ~/.iron/config.toml).")
def config_group() -> None:
    pass


def _load(target: Target) -> config.Config:
    try:
        return config.load(target.config_file)
    except config.ConfigError as exc:
        raise SetupError(str(exc)) from None


def _summary(profile: Profile) -> dict[str, Any]:
    """What a profile holds, tokens left out."""
    return {
        "url": profile.url,
        "email": profile.email,
        "logged_in": profile.user_token is not None,
        "expires_at": profile.expires_at,
    }


@config_group.command(help="Show the profiles (never their tokens).")
@json_flag
@pass_target
def show(target: Target, json_output: bool) -> None:
    loaded = _load(target)
    profiles = {name: _summary(profile) for name, profile in loaded.profiles.items()}
    if json_output:
        summary = {"path": str(target.config_file), "default_profile": loaded.default_profile}
        click.echo(msgspec.json.encode({**summary, "profiles": profiles}).decode())
        return
    out = output.console()
    out.print(f"Config: {target.config_file}\nDefault profile: {loaded.default_profile}", soft_wrap=True)
    rows = [{"profile": name, **facts} for name, facts in profiles.items()]
    out.print(output.table(rows) if rows else "No profiles yet: run 'iron login'.")


@config_group.command(help="Make PROFILE the one used when --profile is not given.")
@click.argument("profile")
@pass_target
def use(target: Target, profile: str) -> None:
    with config.locked(target.config_file):
        loaded = _load(target)
        loaded.default_profile = profile
        config.save(target.config_file, loaded)
    output.console().print(f"Default profile: {profile}")


@config_group.command(name="set-url", help="Set the control plane's URL of the profile.")
@click.argument("url")
@pass_target
def set_url(target: Target, url: str) -> None:
    with config.locked(target.config_file):
        loaded = _load(target)
        name = target.profile or loaded.default_profile
        loaded.profiles[name] = msgspec.structs.replace(
            loaded.profiles.get(name, Profile()), url=url.rstrip("/")
        )
        config.save(target.config_file, loaded)
    output.console().print(f"Profile '{name}' uses {url}")
