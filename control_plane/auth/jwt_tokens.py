"""User access tokens: short-lived HS256 JWTs.

The role is not trusted from the token: every request reads the user's current
role and status, so a suspension or demotion takes effect at once. A token also
names its session (the refresh-token family, ``sid``) so that logout can end the
session, and the user's token generation (``gen``) so that all of a user's
sessions can be ended at once by bumping it.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from iron import ids
from iron.timefmt import utcnow

_ALGORITHM = "HS256"
_TYPE = "access"


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    jti: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    jti: str
    expires_at: datetime
    session_id: str | None
    generation: int


class TokenExpired(Exception):
    pass


class TokenInvalid(Exception):
    pass


def issue(user_id: str, secret: str, ttl_s: int, *, session_id: str, generation: int) -> AccessToken:
    now = utcnow().replace(microsecond=0)  # a JWT counts whole seconds: so does the reported expiry
    expires_at = now + timedelta(seconds=ttl_s)
    jti = ids.new_id("jti")
    claims = {
        "sub": user_id,
        "jti": jti,
        "typ": _TYPE,
        "sid": session_id,
        "gen": generation,
        "iat": now,
        "exp": expires_at,
    }
    return AccessToken(jwt.encode(claims, secret, algorithm=_ALGORITHM), jti, expires_at)


def verify(token: str, secret: str) -> AccessClaims:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[_ALGORITHM], options={"require": ["sub", "jti", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired from None
    except jwt.PyJWTError:
        raise TokenInvalid from None
    session_id, generation = claims.get("sid"), claims.get("gen", 0)
    if (
        claims.get("typ") != _TYPE
        or not isinstance(claims.get("sub"), str)
        or not isinstance(session_id, str | None)
        or type(generation) is not int
    ):
        raise TokenInvalid
    return AccessClaims(
        claims["sub"],
        str(claims["jti"]),
        datetime.fromtimestamp(claims["exp"], UTC),
        session_id,
        generation,
    )
