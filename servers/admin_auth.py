"""Who may call a server's admin endpoints: a client on loopback, or one that sends the admin token."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web


def is_loopback(remote: str | None) -> bool:
    """True when the peer address is a loopback address (IPv4 or IPv6, zone ids allowed)."""
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def admin_allowed(request: web.Request, token: str | None) -> bool:
    """Loopback peers always; others only with ``Authorization: Bearer <token>`` (compared in constant time)."""
    if is_loopback(request.remote):
        return True
    sent = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(sent.encode(errors="surrogateescape"), f"Bearer {token}".encode())
