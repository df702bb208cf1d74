"""The demo app as a visitor sees it: cold start, click round trip, peak memory.

Starts ``python -m demo`` in a subprocess (its own session, stopped at the end), with MobileSAM's
architecture and the benchmark's random weights.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _RssSampler(threading.Thread):
    """Peak RSS of a process tree, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop_flag = threading.Event()

    def sample(self) -> int:
        import psutil

        total = 0
        try:
            procs = [self.proc] + self.proc.children(recursive=True)
        except psutil.Error:
            return self.peak
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)
        return total

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.sample()
            time.sleep(0.05)


def run_app_benchmark(checkpoint: str, image_path: str, clicks: int = 15, timeout_s: float = 240.0,
                      everything: bool = True) -> Dict[str, Any]:
    """Cold start, click round trips through ``gradio_client`` and peak RSS of the demo app."""
    if not (ROOT / "demo").is_dir():
        return {"error": "demo/ not present"}
    port = _free_port()
    env = dict(os.environ)
    env.update({"MOBILE_SAM_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"})
    log = tempfile.NamedTemporaryFile(prefix="demo-bench-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "demo", "--host", "127.0.0.1", "--port", str(port), "--model", "vit_t",
           "--checkpoint", checkpoint]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sampler = _RssSampler(proc.pid)
    sampler.start()
    url = f"http://127.0.0.1:{port}/"
    out: Dict[str, Any] = {"log": log.name}
    try:
        cold: Optional[float] = None
        while time.perf_counter() - t0 < timeout_s:
            if proc.poll() is not None:
                return {**out, "error": f"app exited with code {proc.returncode}"}
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200 and r.read(64):
                        cold = time.perf_counter() - t0
                        break
            except OSError:
                time.sleep(0.05)
        if cold is None:
            return {**out, "error": f"no page within {timeout_s:.0f} s"}
        out["cold_start_s"] = cold
        out["rss_after_start_mb"] = sampler.sample() / 2**20

        from gradio_client import Client, handle_file
        from PIL import Image

        # Plain HTTP to 127.0.0.1: skip loading the CA bundle, which gradio_client otherwise does for
        # each of its ~4 HTTP requests per call (~30 ms each on this machine).
        client = Client(url, verbose=False, ssl_verify=False)
        h, w = Image.open(image_path).size[::-1]

        def click(i: int, files: bool = False) -> float:
            x, y = w * (0.3 + 0.4 * ((i * 37) % 11) / 10), h * (0.3 + 0.4 * ((i * 53) % 7) / 6)
            t = time.perf_counter()
            overlay, _, info = client.predict(handle_file(image_path), [[x, y]], [1], True, files,
                                              api_name="/segment_points")
            Image.open(overlay).load()  # the visitor's browser decodes the image
            return time.perf_counter() - t

        out["first_click_s"] = click(0)  # encodes the image (then cached)
        # What a click shows: the overlay (the UI writes the download files in a follow-up step).
        times = [click(i + 1) for i in range(clicks)]
        out["click_ms"] = [t * 1000 for t in times]
        out["click_median_ms"] = statistics.median(times) * 1000
        # The same call with the download files (mask PNG, cut-out PNG, COCO RLE) in the response.
        with_files = [click(i + 1, files=True) for i in range(max(3, clicks // 3))]
        out["click_with_files_ms"] = [t * 1000 for t in with_files]
        out["click_with_files_median_ms"] = statistics.median(with_files) * 1000
        if everything:
            t = time.perf_counter()
            client.predict(handle_file(image_path), None, api_name="/segment_everything")
            out["everything_s"] = time.perf_counter() - t
        out["peak_rss_mb"] = max(sampler.peak, sampler.sample()) / 2**20
        return out
    except Exception as exc:  # report, do not crash the whole benchmark
        return {**out, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        sampler.stop_flag.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
