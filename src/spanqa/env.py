"""Can this run work here? Network, credentials and disk, answered in milliseconds before anything heavy starts.

- **Servers.** Both `transformers` and `datasets` read HF_HUB_OFFLINE when imported: without it an unreachable Hub
  costs 20-100 s of retries before every failure; with it, the local cache still loads and the rest fails at once.
  W&B with a key but no network hangs ~100 s. So reachability is probed first, the way the libraries will
  connect: through the proxy named by HTTPS_PROXY/HTTP_PROXY unless NO_PROXY exempts the host (huggingface_hub's
  httpx and wandb's service both honour them), else directly.
- **Credentials.** A W&B key in WANDB_API_KEY or ~/.netrc, for the server wandb itself will talk to.
- **Disk.** The output dir is writable and has room for the checkpoints a run keeps. `RunDirCheck` is a Hydra
  callback (registered in conf/config.yaml): Hydra creates the run dir before the task starts, so an unwritable
  `hydra.run.dir` would otherwise surface as a Hydra traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from spanqa.errors import OutputError, fail

log = logging.getLogger(__name__)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


# ---------------------------------------------------------------------------------------------------- reachability
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


# ---------------------------------------------------------------------------------------------------- the Hub
def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in _TRUE


def is_local(name_or_path: str | None) -> bool:
    return name_or_path is not None and Path(name_or_path).expanduser().exists()


def hub_reachable(timeout: float = 3.0) -> bool:
    return reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


def settle_offline_mode() -> bool:
    """Switch to offline mode when the Hub cannot be reached; returns True when running offline. Call before
    transformers/datasets are imported.

    HF_HUB_OFFLINE=0 set by the user means "the Hub is reachable, do not probe": trusted as it is, for networks
    that the probe (proxy-aware as it is) cannot judge."""
    if is_offline():
        return True
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _FALSE:
        return False
    if hub_reachable():
        return False
    log.warning("the Hugging Face Hub is unreachable: using only local paths and the local cache (HF_HUB_OFFLINE=1)")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    return True


# ---------------------------------------------------------------------------------------------------- W&B
def wandb_base_url() -> str:
    """The server wandb will talk to: WANDB_BASE_URL, else wandb's own default (api.wandb.ai until 0.30,
    api.forge.coreweave.com from 0.31 on: read from wandb rather than written here)."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    from wandb.sdk.lib import urls

    return urls.DEFAULT_BASE_URL


def wandb_key_configured() -> bool:
    """A key in WANDB_API_KEY or in ~/.netrc (what `wandb login` writes), for the server wandb will use or the
    W&B API host behind it (a key saved by an older wandb is filed under api.wandb.ai)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    from wandb.sdk.lib import urls

    base = wandb_base_url()
    upstream = getattr(urls, "forge_upstream_url", lambda url: url)(base)
    hosts = {urlparse(url).hostname for url in (base, upstream)} - {None}
    try:
        entries = netrc.netrc(os.environ.get("NETRC"))
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return any(entries.authenticators(host) is not None for host in hosts)


def wandb_server_reachable(timeout: float = 3.0) -> bool:
    return reachable(wandb_base_url(), timeout)


# ---------------------------------------------------------------------------------------------------- disk
def ensure_writable(path: Path, key: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as err:
        raise OutputError(f"{key}={str(path)!r} is not writable ({err.strerror}): choose another directory") from err


def checkpoint_bytes(num_parameters: int, checkpoints_kept: int) -> int:
    """fp32 weights + two AdamW moments per kept checkpoint, plus the final model."""
    return num_parameters * 4 * (3 * checkpoints_kept + 1)


def human_size(n: float) -> str:
    """Bytes as GB from 1 GB up, as MB below: "0.00 GB" says nothing about a nearly full disk."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_free_space(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise OutputError(
            f"{str(path)!r} has {human_size(free)} free but the run's checkpoints need about {human_size(needed)}: "
            "free space, lower trainer.save_total_limit or set hydra.run.dir elsewhere"
        )


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
NEARLY_FULL = 64 * 2**20  # below this, a failed write is taken for a full disk whatever the library said


def _disk_full(err: BaseException, path: Path) -> bool:
    """Whether a failed write ran out of space. torch.save reports it as `RuntimeError: basic_ios::clear` or
    "file write failed", safetensors as an IoError: no errno survives, so the free space decides too."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
            return True
        cause = cause.__cause__ or cause.__context__
    try:
        return shutil.disk_usage(path).free < NEARLY_FULL
    except OSError:
        return False


@contextlib.contextmanager
def disk_full_reported(path: Path, what: str, partial: Path | None = None, intact: str = "") -> Iterator[None]:
    """A write into `path` that runs out of space becomes one OutputError naming `what`, the path and the free
    space; `partial` (what the failed write left half-done) is removed, and `intact` says what is still whole."""
    try:
        yield
    except Exception as err:
        if not _disk_full(err, path):
            raise
        free = shutil.disk_usage(path).free
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        raise OutputError(
            f"writing {what} failed: the disk holding {str(path)!r} is full ({human_size(free)} free)"
            + (f"; {intact}" if intact else "")
        ) from err


class RunDirCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(Path(config.hydra.sweep.dir), "hydra.sweep.dir")

    @staticmethod
    def _check(path: Path, key: str) -> None:
        try:
            ensure_writable(path, key)
        except OutputError as err:
            fail(str(err))
