"""User rules that are not a single SQL statement."""

import logging

import asyncpg

from control_plane.auth.secrets import hash_password
from control_plane.users import repository
from iron import ids

log = logging.getLogger("iron.control_plane")


async def ensure_bootstrap_admin(pool: asyncpg.Pool, email: str, password: str) -> None:
    """Create the first admin from the environment, once; later starts leave it alone."""
    if await repository.by_email(pool, email):
        return
    created = await repository.insert_if_absent(
        pool,
        user_id=ids.new_id(ids.USER),
        email=email,
        name="Administrator",
        role="admin",
        password_hash=await hash_password(password),
    )
    if created:
        log.info("bootstrap admin created")
