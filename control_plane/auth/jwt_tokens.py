"""User access tokens: short-lived HS256 JWTs.

The role is not trusted from the token: every request reads the user's current
role and status, so a suspension or demotion takes effect at once.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

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


class TokenExpired(Exception):
    pass


class TokenInvalid(Exception):
    pass


def issue(user_id: str, secret: str, ttl_s: int) -> AccessToken:
    now = utcnow()
    expires_at = now + timedelta(seconds=ttl_s)
    jti = ids.new_id("jti")
    claims = {"sub": user_id, "jti": jti, "typ": _TYPE, "iat": now, "exp": expires_at}
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
    if claims.get("typ") != _TYPE or not isinstance(claims.get("sub"), str):
        raise TokenInvalid
    return AccessClaims(claims["sub"], str(claims["jti"]), datetime.fromtimestamp(claims["exp"]).astimezone())
