"""SQL migrations, applied at start; safe when several replicas start at once.

Each ``migrations/NNNN_name.sql`` runs once, in order, inside one transaction
that holds a cluster-wide advisory lock: the first replica applies, the others
wait and then find nothing left to do.
"""

from importlib import resources

from control_plane.lib.db import Conn

_LOCK_KEY = 0x1C0_CA6E  # any constant, shared by every replica


def _migration_files() -> list[tuple[str, str]]:
    folder = resources.files("control_plane") / "migrations"
    files = sorted((entry.name, entry) for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), entry.read_text()) for name, entry in files]


async def apply_migrations(conn: Conn) -> list[str]:
    """Apply pending migrations; return the versions applied by this call."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, sql in _migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
        return applied
