"""Wire types of the users domain. A password hash never appears in any of them."""

from typing import Annotated, Literal, get_args

import msgspec

from control_plane.auth.schemas import Email

Role = Literal["admin", "user", "viewer"]
ROLES: tuple[str, ...] = get_args(Role)
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
NewPassword = Annotated[str, msgspec.Meta(min_length=12, max_length=1024)]


class UserCreate(msgspec.Struct, kw_only=True):
    email: Email
    name: Name
    role: Role = "user"
    password: NewPassword | None = None  # None: the server picks one and returns it once


class RoleChange(msgspec.Struct, kw_only=True):
    role: Role


class PasswordReset(msgspec.Struct, kw_only=True):
    password: NewPassword | None = None  # None: the server picks one and returns it once


class User(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    email: str
    name: str
    role: str
    status: str
    created_at: str
    updated_at: str
    locked_until: str | None = None  # while locked out after failed logins


class UserWithPassword(User, kw_only=True, omit_defaults=True):
    temporary_password: str | None = None  # only when the server picked it: shown this once
