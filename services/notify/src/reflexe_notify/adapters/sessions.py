"""Server-side sessions of the web pages, and the logins under way, in PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from reflexe_notify.adapters.oidc import Login, TokenSet

log = logging.getLogger(__name__)
LOGIN_TIMEOUT = timedelta(minutes=10)


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode("ascii", "replace")).digest()


def _at(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


@dataclass(frozen=True)
class PageSession:
    session_id: str
    subject: str
    access_token: str
    refresh_token: str | None
    id_token: str | None
    access_expires_at: datetime
    expires_at: datetime


async def start_login(pool: asyncpg.Pool, login: Login, next_path: str) -> None:
    await pool.execute("DELETE FROM page_logins WHERE created_at < now() - $1::interval", LOGIN_TIMEOUT)
    await pool.execute("INSERT INTO page_logins (state_hash, code_verifier, nonce, next_path) VALUES ($1, $2, $3, $4)",
                       _hash(login.state), login.code_verifier, login.nonce, next_path)


async def finish_login(pool: asyncpg.Pool, state: str) -> tuple[Login, str] | None:
    """The login this state belongs to, once (a replayed callback finds nothing)."""
    row = await pool.fetchrow("DELETE FROM page_logins WHERE state_hash = $1 AND created_at > now() - $2::interval "
                              "RETURNING code_verifier, nonce, next_path", _hash(state), LOGIN_TIMEOUT)
    if row is None:
        return None
    return Login(state, row["code_verifier"], row["nonce"]), row["next_path"]


async def open_session(pool: asyncpg.Pool, subject: str, tokens: TokenSet, max_age: timedelta) -> str:
    session_id = secrets.token_urlsafe(32)
    await pool.execute(
        "INSERT INTO page_sessions (id_hash, subject, access_token, refresh_token, id_token, access_expires_at, "
        "refresh_expires_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8::interval)",
        _hash(session_id), subject, tokens.access_token, tokens.refresh_token, tokens.id_token,
        _at(tokens.access_expires_at), _at(tokens.refresh_expires_at), max_age)
    return session_id


async def session(pool: asyncpg.Pool, session_id: str) -> PageSession | None:
    row = await pool.fetchrow("SELECT * FROM page_sessions WHERE id_hash = $1 AND expires_at > now() "
                              "AND (refresh_expires_at IS NULL OR refresh_expires_at > now() OR access_expires_at > now())",
                              _hash(session_id))
    if row is None:
        return None
    return PageSession(session_id, row["subject"], row["access_token"], row["refresh_token"], row["id_token"],
                       row["access_expires_at"], row["expires_at"])


async def renew(pool: asyncpg.Pool, session_id: str, tokens: TokenSet) -> None:
    await pool.execute("UPDATE page_sessions SET access_token = $2, refresh_token = coalesce($3, refresh_token), "
                       "id_token = coalesce($4, id_token), access_expires_at = $5, refresh_expires_at = $6 "
                       "WHERE id_hash = $1", _hash(session_id), tokens.access_token, tokens.refresh_token,
                       tokens.id_token, _at(tokens.access_expires_at), _at(tokens.refresh_expires_at))


async def close_session(pool: asyncpg.Pool, session_id: str) -> PageSession | None:
    found = await session(pool, session_id)
    await pool.execute("DELETE FROM page_sessions WHERE id_hash = $1", _hash(session_id))
    return found


async def prune_periodically(pool: asyncpg.Pool, every_seconds: float = 600) -> None:
    """Ended sessions and abandoned logins go (their tokens with them)."""
    while True:
        await asyncio.sleep(every_seconds)
        try:
            await pool.execute("DELETE FROM page_sessions WHERE expires_at < now() OR refresh_expires_at < now()")
            await pool.execute("DELETE FROM page_logins WHERE created_at < now() - $1::interval", LOGIN_TIMEOUT)
        except (asyncpg.PostgresError, OSError):
            log.warning("pruning page sessions failed; will retry", exc_info=True)
