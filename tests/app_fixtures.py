"""Fixtures that start the real demo app (``python -m demo``) in a subprocess on a free port.

Import the fixtures into a test module (``from app_fixtures import app_server, ...``). The app
serves MobileSAM's architecture with seeded random weights saved to a checkpoint file, so the
tests can rebuild the very same model in-process and compare the app's answers with direct core
calls. The server starts once per test session and is killed at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# Grid of the everything tab in tests: 8x8 = 64 decoder prompts (a few seconds on 2 cores).
TEST_POINTS_PER_SIDE = 8
# Upload limit of the test app (small, so that the limit itself can be tested cheaply).
TEST_MAX_FILE_SIZE = "2mb"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def example(name: str) -> Path:
    """Path of an example image by stem (``chelsea`` -> ``examples/chelsea.jpg``)."""
    matches = sorted(p for p in EXAMPLES.glob(f"{name}.*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not matches:
        pytest.fail(f"example image {name!r} missing from {EXAMPLES}")
    return matches[0]


@dataclass
class AppServer:
    url: str
    port: int
    checkpoint: Path | None
    log_path: Path
    process: subprocess.Popen

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None


@pytest.fixture(scope="session")
def random_vit_t_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileSAM (vit_t) with seeded random weights, saved in the core's key layout."""
    import torch

    from mobile_sam_core import sam_model_registry

    torch.manual_seed(1234)
    model = sam_model_registry["vit_t"](checkpoint=None)
    path = tmp_path_factory.mktemp("app_ckpt") / "vit_t_random.pt"
    torch.save(model.state_dict(), path)
    return path


def start_server(checkpoint: Path | None, log_path: Path, *, model: str = "vit_t", extra_env: dict | None = None,
                 timeout_s: float = 180.0) -> AppServer:
    """Start ``python -m demo`` on a free port and wait until it answers.

    ``checkpoint=None`` lets the app resolve weights itself (env, cache, bundled fallback).
    """
    port = free_port()
    env = dict(os.environ)
    env.update({
        "MOBILE_SAM_OFFLINE": "1",
        "MOBILE_SAM_DEMO_POINTS_PER_SIDE": str(TEST_POINTS_PER_SIDE),
        "MOBILE_SAM_DEMO_TORCH_THREADS": env.get("MOBILE_SAM_DEMO_TORCH_THREADS", "2"),
        "MOBILE_SAM_DEMO_MAX_FILE_SIZE": TEST_MAX_FILE_SIZE,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "demo", "--host", "127.0.0.1", "--port", str(port), "--model", model]
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint)]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = AppServer(f"http://127.0.0.1:{port}/", port, checkpoint, log_path, proc)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"the app exited with code {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + "config", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"the app did not answer within {timeout_s:.0f} s:\n{server.log_tail()}")


def stop_server(server: AppServer) -> None:
    if server.alive():
        os.killpg(server.process.pid, signal.SIGTERM)  # its own session: only the app and its children
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=5)


@pytest.fixture(scope="session")
def app_server(random_vit_t_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """The demo app with random MobileSAM weights, started once per test session."""
    log_path = tmp_path_factory.mktemp("app_log") / "app.log"
    server = start_server(random_vit_t_checkpoint, log_path)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def fallback_server(tmp_path_factory: pytest.TempPathFactory):
    """The app started offline with no MobileSAM weights anywhere: it serves LiteMedSAM."""
    cache = tmp_path_factory.mktemp("empty_weights_cache")
    log_path = tmp_path_factory.mktemp("fallback_log") / "app.log"
    server = start_server(None, log_path, extra_env={"MOBILE_SAM_CACHE_DIR": str(cache),
                                                     "MOBILE_SAM_CHECKPOINT_VIT_T": ""})
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def vit_t_model(random_vit_t_checkpoint: Path):
    """The app's model rebuilt in the test process from the same checkpoint."""
    from mobile_sam_core import sam_model_registry

    return sam_model_registry["vit_t"](checkpoint=str(random_vit_t_checkpoint))
