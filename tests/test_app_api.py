"""The demo app's HTTP API, exercised with gradio_client against the real app in a subprocess.

The app serves MobileSAM's architecture with seeded random weights (``app_fixtures``); the same
checkpoint is loaded here, so every answer is compared with a direct call of the core. A second
app runs offline without MobileSAM weights to check the LiteMedSAM fallback on a real photo.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from tests.app_fixtures import (  # noqa: E402,F401  (fixtures)
    TEST_POINTS_PER_SIDE,
    app_server,
    example,
    fallback_server,
    random_vit_t_checkpoint,
    start_server,
    stop_server,
    vit_t_model,
)

from mobile_sam_core import SamPredictor, sam_model_registry  # noqa: E402
from mobile_sam_core.images import load_image  # noqa: E402
from mobile_sam_core.render import rle_to_mask  # noqa: E402

AppError = gradio_client.exceptions.AppError


@pytest.fixture(scope="module")
def client(app_server) -> Client:
    return Client(app_server.url, verbose=False)


def read_mask(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127


def by_suffix(files: list[str]) -> dict[str, str]:
    out = {}
    for f in files:
        name = Path(f).name
        key = "rle" if name.endswith("_masks_rle.json") else "cutout" if name.endswith("_cutout.png") else "mask"
        out[key] = f
    return out


def direct(model, path: Path, *, points=None, labels=None, box=None, multimask=True):
    """The core's own answer for the same image and prompts (no cache, fresh predictor)."""
    loaded = load_image(path)
    predictor = SamPredictor(model, cache=False)
    predictor.set_image(loaded.array)
    masks, scores, _ = predictor.predict(
        point_coords=None if points is None else np.asarray(points, float),
        point_labels=None if labels is None else np.asarray(labels),
        box=None if box is None else np.asarray(box, float),
        multimask_output=multimask,
    )
    return loaded, masks, scores


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels on which two masks agree."""
    assert a.shape == b.shape
    return float((a == b).mean())


def check_prompt_result(result, image_path: Path, n_candidates: int) -> tuple[np.ndarray, dict]:
    overlay, files, info = result
    h, w = np.asarray(Image.open(image_path)).shape[:2]
    assert Image.open(overlay).size == (w, h)
    f = by_suffix(files)
    assert set(f) == {"mask", "cutout", "rle"}
    mask = read_mask(f["mask"])
    assert mask.shape == (h, w)
    cutout = Image.open(f["cutout"])
    assert cutout.mode == "RGBA"
    rle = json.loads(Path(f["rle"]).read_text())
    annotations = rle["annotations"] if isinstance(rle, dict) else rle
    assert len(annotations) == n_candidates
    assert info["image_size"] == [h, w]
    assert len(info["scores"]) == n_candidates
    assert all(np.isfinite(s) and -1.5 < s < 1.5 for s in info["scores"])  # predicted IoU, 0..1-ish
    assert info["best"] == int(np.argmax(info["scores"]))
    t = info["timings_ms"]
    assert t["encoder_ms"] >= 0 and t["decoder_ms"] > 0 and isinstance(t["encoder_cached"], bool)
    assert info["model"] == "vit_t"
    return mask, info


def test_api_page_lists_exactly_the_three_endpoints(client: Client) -> None:
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/segment_points", "/segment_box", "/segment_everything", "/compare"}
    assert not api["unnamed_endpoints"]
    params = [p["parameter_name"] for p in api["named_endpoints"]["/segment_points"]["parameters"]]
    assert params == ["image", "points", "labels", "multimask", "files"]


def test_segment_points_matches_the_core(client: Client, vit_t_model) -> None:
    path = example("chelsea")
    points, labels = [[230, 140], [120, 60]], [1, 0]
    result = client.predict(image=handle_file(str(path)), points=points, labels=labels, multimask=True,
                            api_name="/segment_points")
    mask, info = check_prompt_result(result, path, 3)
    _, masks, scores = direct(vit_t_model, path, points=points, labels=labels)
    np.testing.assert_allclose(info["scores"], scores, atol=2e-3)
    assert agreement(mask, masks[int(np.argmax(scores))]) > 0.999
    # A second call on the same image finds the embedding in the app's cache.
    again = client.predict(image=handle_file(str(path)), points=json.dumps(points[:1]), labels=None,
                           multimask=False, api_name="/segment_points")
    _, info2 = check_prompt_result(again, path, 1)
    assert info2["timings_ms"]["encoder_cached"] is True
    assert info2["labels"] == [1]
    # Preview (files=False): same best mask and scores, overlay only.
    overlay, files, info3 = client.predict(image=handle_file(str(path)), points=points, labels=labels,
                                           multimask=True, files=False, api_name="/segment_points")
    assert files == [] and info3["files"] == {}
    np.testing.assert_allclose(info3["scores"], info["scores"], atol=1e-6)
    assert info3["best"] == info["best"] and info3["mask_area"] == info["mask_area"]
    assert info3["timings_ms"]["encoder_cached"] is True
    shown = np.asarray(Image.open(overlay).convert("RGB"), dtype=np.int16)
    full = np.asarray(Image.open(result[0]).convert("RGB"), dtype=np.int16)
    assert np.abs(shown - full).mean() < 1.0  # the same overlay (both JPEG)


def test_segment_box_is_clipped_and_matches_the_core(client: Client, vit_t_model) -> None:
    path = example("coffee")
    h, w = np.asarray(Image.open(path)).shape[:2]
    box = [-40, 20, 420, h + 50]  # dragged from beside the image
    result = client.predict(image=handle_file(str(path)), box=box, points=[[300, 150]], labels=[1],
                            api_name="/segment_box")
    mask, info = check_prompt_result(result, path, 1)
    assert info["box"] == [0, 20, 420, h]
    _, masks, _ = direct(vit_t_model, path, points=[[300, 150]], labels=[1], box=[0, 20, 420, h], multimask=False)
    assert agreement(mask, masks[0]) > 0.999


def test_segment_everything(client: Client) -> None:
    path = example("astronaut")
    h, w = np.asarray(Image.open(path)).shape[:2]
    settings = {"points_per_side": TEST_POINTS_PER_SIDE, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    overlay, files, info = client.predict(image=handle_file(str(path)), settings=settings,
                                          api_name="/segment_everything")
    assert Image.open(overlay).size == (w, h)
    assert info["count"] >= 1 and info["count"] == len(info["masks"])
    assert info["settings"]["points_per_side"] == TEST_POINTS_PER_SIDE
    assert info["timings_ms"]["total_ms"] > 0
    f = by_suffix(files)
    assert read_mask(f["mask"]).shape == (h, w)
    rle = json.loads(Path(f["rle"]).read_text())
    annotations = rle["annotations"] if isinstance(rle, dict) else rle
    assert len(annotations) == info["count"]
    first = annotations[0]
    decoded = rle_to_mask(first["segmentation"] if "segmentation" in first else first)
    assert decoded.shape == (h, w)
    assert all(0 <= m["bbox"][0] <= w and m["area"] > 0 for m in info["masks"])


def test_bad_inputs_give_errors_and_the_app_keeps_working(client: Client, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image\n")
    chelsea = handle_file(str(example("chelsea")))
    cases = [
        (dict(image=handle_file(str(text)), points=[[10, 10]], api_name="/segment_points"), "not an image"),
        (dict(image=chelsea, points=[[5000, 10]], api_name="/segment_points"), "outside"),
        (dict(image=chelsea, points=[], api_name="/segment_points"), "No points"),
        (dict(image=chelsea, points="[[1, 2", api_name="/segment_points"), "JSON"),
        (dict(image=chelsea, points=[[10, 10]], labels=[1, 0], api_name="/segment_points"), "label"),
        (dict(image=chelsea, box=[], api_name="/segment_box"), "No box"),
        (dict(image=chelsea, box=[900, 900, 1000, 1000], api_name="/segment_box"), "outside"),
        (dict(image=chelsea, settings={"points_per_side": 500}, api_name="/segment_everything"), "between"),
        (dict(image=chelsea, settings={"grid": 4}, api_name="/segment_everything"), "Unknown settings"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(AppError) as info:
            client.predict(**kwargs)
        assert expected.lower() in str(info.value).lower(), (kwargs.get("api_name"), str(info.value))
    result = client.predict(image=chelsea, points=[[200, 150]], api_name="/segment_points")
    check_prompt_result(result, example("chelsea"), 3)


def test_upload_size_limit(client: Client, tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (1100, 1100, 3), dtype=np.uint8)  # ~3.6 MB PNG
    big = tmp_path / "noise.png"
    Image.fromarray(noise).save(big, compress_level=0)
    with pytest.raises(Exception) as info:
        client.predict(image=handle_file(str(big)), points=[[10, 10]], api_name="/segment_points")
    assert "size" in str(info.value).lower() or "413" in str(info.value) or "large" in str(info.value).lower()
    check_prompt_result(client.predict(image=handle_file(str(example("chelsea"))), points=[[20, 20]],
                                       api_name="/segment_points"), example("chelsea"), 3)


def test_large_image_is_downsized_and_answers_in_its_own_coordinates(client: Client, vit_t_model,
                                                                     tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:1300, 0:2600]
    img = np.stack([xx % 256, yy % 256, ((xx // 40 + yy // 40) % 2) * 200], axis=-1).astype(np.uint8)
    path = tmp_path / "wide.png"
    Image.fromarray(img).save(path)
    overlay, files, info = client.predict(image=handle_file(str(path)), points=[[2000, 1000]],
                                          api_name="/segment_points")
    assert info["image_size"] == [1300, 2600]
    assert info["scale"] < 1 and max(info["working_size"]) <= 2048
    assert read_mask(by_suffix(files)["mask"]).shape == (1300, 2600)
    loaded = load_image(path)
    working_point = loaded.to_working_coords(np.array([[2000.0, 1000.0]]))
    _, masks, scores = direct(vit_t_model, path, points=working_point, labels=[1])
    expected = loaded.mask_to_original(masks[int(np.argmax(scores))])
    assert agreement(read_mask(by_suffix(files)["mask"]), expected) > 0.995


def test_interleaved_clients_each_get_their_own_results(app_server, vit_t_model) -> None:
    a, b = Client(app_server.url, verbose=False), Client(app_server.url, verbose=False)
    jobs = {
        "a1": (a, example("chelsea"), [[230, 140]]),
        "b1": (b, example("coffee"), [[290, 150]]),
        "a2": (a, example("chelsea"), [[100, 200]]),
        "b2": (b, example("coffee"), [[450, 300]]),
    }
    # Submitted together (interleaved in the queue), then collected.
    submitted = {k: c.submit(image=handle_file(str(p)), points=pts, api_name="/segment_points")
                 for k, (c, p, pts) in jobs.items()}
    for key, job in submitted.items():
        _, path, pts = jobs[key]
        mask, info = check_prompt_result(job.result(timeout=300), path, 3)
        assert info["points"] == [[float(v) for v in pts[0]]]
        _, masks, scores = direct(vit_t_model, path, points=pts, labels=[1])
        assert agreement(mask, masks[int(np.argmax(scores))]) > 0.999, key


def test_a_long_everything_run_does_not_block_point_requests(app_server) -> None:
    slow, fast = Client(app_server.url, verbose=False), Client(app_server.url, verbose=False)
    job = slow.submit(image=handle_file(str(example("rocket"))), settings={"points_per_side": 12},
                      api_name="/segment_everything")
    deadline = time.monotonic() + 60
    while job.status().code.name not in ("PROCESSING", "FINISHED") and time.monotonic() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    result = fast.predict(image=handle_file(str(example("chelsea"))), points=[[100, 100]],
                          api_name="/segment_points")
    answered_after = time.monotonic() - t0
    check_prompt_result(result, example("chelsea"), 3)
    assert not job.done(), f"points answered only after everything finished ({answered_after:.1f} s)"
    job.result(timeout=600)


def test_ui_events_are_not_on_the_api_page(app_server) -> None:
    import urllib.request

    with urllib.request.urlopen(app_server.url + "gradio_api/info") as r:
        info = json.load(r)
    assert set(info["named_endpoints"]) == {"/segment_points", "/segment_box", "/segment_everything", "/compare"}


# ------------------------------------------------------------------ offline fallback (LiteMedSAM)


def test_fallback_serves_lite_medsam_and_a_box_finds_the_coffee_cup(fallback_server) -> None:
    client = Client(fallback_server.url, verbose=False)
    path = example("coffee")
    box = [170, 15, 410, 300]
    overlay, files, info = client.predict(image=handle_file(str(path)), box=box, api_name="/segment_box")
    assert info["model"] == "lite_medsam" and info["weights"] == "fallback"
    assert info["scores"][0] > 0.7
    # the served model was run once at start-up, before the first visitor
    assert "warm-up of lite_medsam" in fallback_server.log_path.read_text(errors="replace")
    mask = read_mask(by_suffix(files)["mask"])
    inside = mask[15:300, 170:410].sum() / max(mask.sum(), 1)
    assert mask.sum() > 0.25 * (410 - 170) * (300 - 15) and inside > 0.95
    model = sam_model_registry["lite_medsam"](checkpoint=str(__import__(
        "mobile_sam_core.weights", fromlist=["x"]).bundled_checkpoint_path("lite_medsam")))
    _, masks, scores = direct(model, path, box=box, multimask=False)
    assert agreement(mask, masks[0]) > 0.999
    # A single point gives LiteMedSAM's empty mask: an answer with mask and RLE, no cut-out.
    overlay, files, info = client.predict(image=handle_file(str(path)), points=[[290, 150]], labels=[1],
                                          api_name="/segment_points")
    assert info["mask_area"] == 0 and set(info["files"]) == {"mask_png", "rle_json"}
    assert set(by_suffix(files)) == {"mask", "rle"} and not read_mask(by_suffix(files)["mask"]).any()


def test_app_file_builds_when_run_as_a_script_like_on_spaces(tmp_path: Path) -> None:
    """Hugging Face Spaces runs `python demo/app.py` from elsewhere; imports must still work."""
    import os
    import subprocess
    import sys

    from tests.app_fixtures import ROOT

    code = ("import runpy; g = runpy.run_path(%r); app = g['default_app']();"
            "print(type(app).__name__, app.ctx.models.get().name)") % str(ROOT / "demo" / "app.py")
    env = {**os.environ, "MOBILE_SAM_DEMO_RANDOM_WEIGHTS": "1", "MOBILE_SAM_OFFLINE": "1",
           "MOBILE_SAM_DEMO_TORCH_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "Blocks vit_t"


def test_model_service_switches_to_mobile_sam_when_its_weights_appear(tmp_path: Path, monkeypatch,
                                                                      random_vit_t_checkpoint: Path) -> None:
    from demo.services import ModelService

    monkeypatch.setenv("MOBILE_SAM_OFFLINE", "1")
    monkeypatch.setenv("MOBILE_SAM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MOBILE_SAM_CHECKPOINT_VIT_T", raising=False)
    service = ModelService("vit_t")
    assert service.get().name == "lite_medsam" and service.get().is_fallback
    assert service.refresh() is False  # nothing changed
    monkeypatch.setenv("MOBILE_SAM_CHECKPOINT_VIT_T", str(random_vit_t_checkpoint))
    assert service.refresh() is True
    served = service.get()
    assert served.name == "vit_t" and served.source == "env" and not served.is_fallback


def test_concurrent_encodes_of_one_image_run_the_encoder_once(random_vit_t_checkpoint: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from demo.services import ModelService, encode_image, read_image

    served = ModelService("vit_t", str(random_vit_t_checkpoint), random_weights=True).get()
    image = read_image(example("rocket")).array
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: encode_image(served, image), range(3)))
    assert sorted(cached for _, cached in results) == [False, True, True]
