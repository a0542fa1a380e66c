"""Can a server be reached? Answered in milliseconds (or `timeout`), before libraries start retrying for minutes."""

from __future__ import annotations

import socket
from urllib.parse import urlparse


def reachable(url: str, timeout: float = 3.0) -> bool:
    """True when a TCP connection to the URL's host and port opens in time (DNS failure and refusal are fast)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False
