"""Can a run work here: reachability through proxies, the Hub's offline mode, W&B credentials, disk space."""

from __future__ import annotations

import errno
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from spanqa.env import check_free_space, checkpoint_bytes, disk_full_reported, human_size
from spanqa.errors import OutputError


class FakeProxy:
    """A local listener standing in for an HTTP proxy: records each request line, answers CONNECT with `status`."""

    def __init__(self, status: str = "200 Connection established") -> None:
        self.status = status
        self.requests: list[str] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
                    data += chunk
                self.requests.append(data.split(b"\r\n")[0].decode())
                conn.sendall(f"HTTP/1.1 {self.status}\r\n\r\n".encode())

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProxy]:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeProxy()
    monkeypatch.setenv("HTTPS_PROXY", fake.url)
    yield fake
    fake.close()


def test_the_probe_goes_through_the_proxy_and_honours_no_proxy(proxy: FakeProxy, monkeypatch) -> None:
    from spanqa.env import reachable

    # hub.invalid resolves nowhere: only the proxy can reach it.
    assert reachable("https://hub.invalid", timeout=2)
    assert proxy.requests == ["CONNECT hub.invalid:443 HTTP/1.1"]
    monkeypatch.setenv("no_proxy", "example.org,hub.invalid")
    assert not reachable("https://hub.invalid", timeout=2)  # direct: DNS fails
    assert len(proxy.requests) == 1


def test_a_proxy_that_refuses_the_tunnel_means_unreachable(monkeypatch) -> None:
    from spanqa.env import reachable

    refusing = FakeProxy("403 Forbidden")
    monkeypatch.setenv("https_proxy", refusing.url)
    try:
        assert not reachable("https://hub.invalid", timeout=2)
        assert refusing.requests == ["CONNECT hub.invalid:443 HTTP/1.1"]
    finally:
        refusing.close()


def test_hub_offline_mode_follows_the_proxy_and_an_explicit_hf_hub_offline_0_is_trusted(
    proxy: FakeProxy, monkeypatch
) -> None:
    from spanqa import env

    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    assert env.settle_offline_mode() is False  # reachable through the proxy: stay online
    assert proxy.requests == ["CONNECT hub.invalid:443 HTTP/1.1"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens: a probe would fail
    assert env.settle_offline_mode() is False and len(proxy.requests) == 1  # not probed


def test_the_wandb_probe_targets_wandbs_own_server_through_the_proxy(proxy: FakeProxy, monkeypatch) -> None:
    from wandb.sdk.lib import urls

    from spanqa.env import wandb_base_url, wandb_server_reachable

    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    assert wandb_base_url() == urls.DEFAULT_BASE_URL
    assert wandb_server_reachable(timeout=2)
    host = re.sub(r"^https://", "", urls.DEFAULT_BASE_URL)
    assert proxy.requests == [f"CONNECT {host}:443 HTTP/1.1"]


@pytest.mark.parametrize("host", ["api.wandb.ai", "api.forge.coreweave.com"])
def test_a_wandb_key_in_netrc_is_found_for_the_server_or_the_api_host_behind_it(
    host: str, tmp_path: Path, monkeypatch
) -> None:
    from spanqa.env import wandb_key_configured

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    netrc.write_text("machine example.org login user password x\n")
    netrc.chmod(0o600)
    assert not wandb_key_configured()
    netrc.write_text(f"machine {host} login user password {'k' * 40}\n")
    assert wandb_key_configured()


def test_disk_space_is_checked_against_the_checkpoints_to_keep(tmp_path: Path) -> None:
    assert checkpoint_bytes(num_parameters=110_000_000, checkpoints_kept=2) == 110_000_000 * 4 * 7
    check_free_space(tmp_path, needed=1)
    with pytest.raises(OutputError, match="GB free but the run's checkpoints need about"):
        check_free_space(tmp_path, needed=shutil.disk_usage(tmp_path).free * 2)


def test_sizes_below_a_gigabyte_are_given_in_megabytes() -> None:
    assert (human_size(2.5e9), human_size(0.999e9), human_size(412_345), human_size(0)) == (
        "2.50 GB", "999.0 MB", "0.4 MB", "0.0 MB",
    )  # fmt: skip


def test_a_write_that_runs_out_of_disk_is_one_line_and_removes_its_half(tmp_path: Path) -> None:
    partial = tmp_path / "checkpoint-8"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"12")
    with (
        pytest.raises(OutputError) as err,
        disk_full_reported(tmp_path, "checkpoint-8", partial, "checkpoint-4 intact"),
    ):
        raise RuntimeError("basic_ios::clear: iostream error") from OSError(errno.ENOSPC, "No space left on device")
    assert str(err.value).startswith(f"writing checkpoint-8 failed: the disk holding {str(tmp_path)!r} is full (")
    assert str(err.value).endswith(" free); checkpoint-4 intact") and not partial.exists()
    with pytest.raises(ValueError, match="not about disks"), disk_full_reported(tmp_path, "x"):
        raise ValueError("not about disks")  # other failures pass through unchanged (this disk has room)
