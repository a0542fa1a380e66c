"""Can a server be reached? Answered in milliseconds (or `timeout`), before libraries start retrying for minutes.

The answer must match what the libraries will do: huggingface_hub (httpx) and W&B send their requests through
the proxy named by HTTPS_PROXY/HTTP_PROXY unless NO_PROXY exempts the host. A probe that connected directly would
call the Hub unreachable on every cluster whose nodes only reach the internet through a proxy.
"""

from __future__ import annotations

import socket
import urllib.request
from urllib.parse import urlparse


def proxy_for(url: str) -> str | None:
    """The proxy URL the standard variables route `url` through (lower- or upper-case), or None: NO_PROXY wins."""
    parsed = urlparse(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if not proxy or urllib.request.proxy_bypass(parsed.hostname or ""):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _through_proxy(proxy: str, host: str, port: int, scheme: str, timeout: float) -> bool:
    """Ask the proxy to reach host:port. HTTPS: a CONNECT tunnel, answered 2xx when the proxy got through.
    HTTP: a HEAD in absolute form; 5xx means the proxy could not reach the server (502/504)."""
    p = urlparse(proxy)
    request = (
        f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
        if scheme == "https"
        else f"HEAD {scheme}://{host}:{port}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    try:
        with socket.create_connection((p.hostname or "", p.port or _default_port(p.scheme)), timeout=timeout) as conn:
            conn.sendall(request.encode("ascii"))
            status_line = conn.makefile("rb").readline(256).decode("latin-1")
    except OSError:
        return False
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return False
    status = int(parts[1])
    return 200 <= status < 300 if scheme == "https" else status < 500


def reachable(url: str, timeout: float = 3.0) -> bool:
    """True when the URL's server can be reached the way an HTTP client configured from the environment would:
    through the proxy when one applies, else by a direct TCP connection (DNS failure and refusal are fast)."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or _default_port(parsed.scheme)
    proxy = proxy_for(url)
    if proxy is not None:
        return _through_proxy(proxy, host, port, parsed.scheme, timeout)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
