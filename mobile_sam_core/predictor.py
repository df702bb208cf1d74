"""``SamPredictor``: segment-anything's predictor API with a shared embedding cache."""

from __future__ import annotations

import time
from typing import Optional, Tuple

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from .acceleration import ENCODER_BACKENDS, ENCODER_PRECISIONS, auto_configure_runtime, encode
from .embedding_cache import CachedEmbedding, EmbeddingCache, default_embedding_cache, image_digest
from .fast_decoder import cached_dense_pe, fast_decoder_for, image_context
from .mask_upsample import threshold_resized, threshold_upscaled
from .upsample import upscale_logits

__all__ = ["SamPredictor", "warm_up"]


class SamPredictor:
    """Compute an image embedding once, then predict masks for any number of prompts.

    Arguments, return values and coordinate conventions are segment-anything's
    (``segment_anything.SamPredictor``). In addition, embeddings are looked up in and stored into
    ``cache`` (the process-wide :func:`default_embedding_cache` unless given; pass
    ``cache=False`` to disable), keyed by image content and model.

    Speed (see ``mobile_sam_core.acceleration``, ``fast_decoder``, ``mask_upsample``): by default
    the encoder runs an optimised float32 graph, the decoder shares per-image work between
    prompts, and boolean masks come from OpenCV's resizes. Embeddings, IoU predictions and
    low-res logits match the reference computation to float32 rounding; boolean masks can
    differ only at pixels whose upsampled logit is within a certified ~1e-4 of the threshold
    (a handful per mask; ``exact_masks=True`` makes them bit-identical).

    Keyword-only options:
        encoder_precision: ``"fp32"`` (default, exact) or ``"bf16"`` (opt-in fast mode: about 2x
            faster encoder, approximate embeddings; measured mask IoU in docs/benchmarks.md).
            Embeddings of different precisions are cached separately.
        encoder_backend: ``"auto"`` (default: OpenVINO for bf16 when installed, PyTorch
            otherwise), ``"torch"``, ``"openvino"`` or ``"onnx"`` (ONNX Runtime, fp32; both
            converted once and cached) or ``"reference"`` (the module's own forward).
        fast_decoder: use the reorganised decoder (default True; prompts with ``mask_input``
            always use the reference decoder).
        exact_masks: boolean masks bit-identical to thresholding PyTorch's upsampled logits
            (exact float32 arithmetic redone for pixels near the threshold: ~6 ms more per
            click on a 1500x2241 image). Default False: OpenCV's resizes, see above.
    """

    def __init__(
        self,
        sam_model: Sam,
        *,
        cache: EmbeddingCache | bool | None = None,
        encoder_precision: str = "fp32",
        encoder_backend: str = "auto",
        fast_decoder: bool = True,
        exact_masks: bool = False,
    ) -> None:
        if encoder_precision not in ENCODER_PRECISIONS:
            raise ValueError(f"encoder_precision must be one of {ENCODER_PRECISIONS}, got {encoder_precision!r}")
        if encoder_backend not in ENCODER_BACKENDS:
            raise ValueError(f"encoder_backend must be one of {ENCODER_BACKENDS}, got {encoder_backend!r}")
        self.encoder_precision = encoder_precision
        self.encoder_backend = encoder_backend
        self.fast_decoder = bool(fast_decoder)
        self.exact_masks = bool(exact_masks)
        auto_configure_runtime()
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        if cache is None or cache is True:
            cache = default_embedding_cache()
        # `is False`, not truthiness: an empty cache has len() == 0.
        self.cache: EmbeddingCache | None = None if cache is False else cache
        self.last_set_image_from_cache = False
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _cache_key(self, digest: str) -> tuple[str, str]:
        token = getattr(self.model, "cache_token", None) or f"id:{id(self.model)}"
        if self.encoder_precision != "fp32":
            token = f"{token}|{self.encoder_precision}"
        return token, digest

    def set_image(self, image: np.ndarray, image_format: str = "RGB", *, digest: str | None = None) -> None:
        """Encode ``image`` (HxWx3 uint8, ``image_format`` "RGB" or "BGR") for later prompts.

        ``digest``: ``image_digest(image)`` when the caller already has it (for example
        ``LoadedImage.digest``); it keys the embedding cache and saves hashing the pixels again.
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"expected an HxWx3 image array, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {image.dtype}; see mobile_sam_core.load_image")
        if image_format != self.model.image_format:
            image = image[..., ::-1]
            digest = None  # the digest names the pixels as given, not the flipped ones

        if self.cache is None:
            self._encode(image)
            self.last_set_image_from_cache = False
            return
        # single flight: a second caller for the same image waits for this encode, not a second one
        item, cached = self.cache.get_or_compute(self._cache_key(digest or image_digest(image)),
                                                 lambda: self._encode(image))
        if cached:
            self._use_embedding(item)
        self.last_set_image_from_cache = cached

    def _encode(self, image: np.ndarray) -> CachedEmbedding:
        """Run the encoder on an RGB/BGR array already in the model's channel order."""
        input_image = self.transform.apply_image(image)
        input_image_torch = torch.as_tensor(input_image, device=self.device)
        input_image_torch = input_image_torch.permute(2, 0, 1).contiguous()[None, :, :, :]
        self.set_torch_image(input_image_torch, image.shape[:2])
        return CachedEmbedding(self.features, self.original_size, self.input_size)

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: Tuple[int, ...]) -> None:
        """Encode an already resized ``1x3xHxW`` tensor (longest side = encoder input size)."""
        size = self.model.image_encoder.img_size
        if not (
            transformed_image.ndim == 4
            and transformed_image.shape[1] == 3
            and max(*transformed_image.shape[2:]) == size
        ):
            raise ValueError(f"set_torch_image expects a 1x3xHxW tensor with longest side {size}")
        self.reset_image()
        self.original_size = tuple(int(v) for v in original_image_size)
        self.input_size = tuple(int(v) for v in transformed_image.shape[-2:])
        input_image = self.model.preprocess(transformed_image)
        self.features = encode(self.model, input_image, self.encoder_precision, self.encoder_backend)
        self.is_image_set = True

    def set_embedding(self, embedding: CachedEmbedding) -> None:
        """Use a previously computed embedding (e.g. from :meth:`get_cached_embedding`)."""
        self._use_embedding(embedding)

    def get_cached_embedding(self) -> CachedEmbedding:
        """The current embedding with the sizes needed to reuse it."""
        self._require_image()
        return CachedEmbedding(self.features, self.original_size, self.input_size)

    def _use_embedding(self, item: CachedEmbedding) -> None:
        self.reset_image()
        self.features = item.features
        self.original_size = item.original_size
        self.input_size = item.input_size
        self.is_image_set = True

    def _prompt_tensors(self, point_coords: Optional[np.ndarray], point_labels: Optional[np.ndarray],
                        box: Optional[np.ndarray], mask_input: Optional[np.ndarray]) -> tuple:
        """Check numpy prompts (original-image pixels) and move them to the model's input frame."""
        coords_torch = labels_torch = box_torch = mask_input_torch = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be supplied with point_coords")
            point_coords = np.asarray(point_coords, dtype=np.float64)
            point_labels = np.asarray(point_labels)
            if point_coords.ndim != 2 or point_coords.shape[1] != 2:
                raise ValueError(f"point_coords must be Nx2, got shape {point_coords.shape}")
            if point_labels.shape != (point_coords.shape[0],):
                raise ValueError("point_labels must hold one label per point")
            point_coords = self.transform.apply_coords(point_coords, self.original_size)
            coords_torch = torch.as_tensor(point_coords, dtype=torch.float, device=self.device)[None]
            labels_torch = torch.as_tensor(point_labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            box = np.asarray(box, dtype=np.float64)
            if box.size != 4:
                raise ValueError(f"box must hold 4 numbers XYXY, got shape {box.shape}")
            box = self.transform.apply_boxes(box.reshape(1, 4), self.original_size)
            box_torch = torch.as_tensor(box, dtype=torch.float, device=self.device)
        if mask_input is not None:
            mask_input_torch = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)
            if mask_input_torch.ndim == 3:
                mask_input_torch = mask_input_torch[None]
        return coords_torch, labels_torch, box_torch, mask_input_torch

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for prompts in original-image pixel coordinates.

        Returns ``(masks CxHxW, iou_predictions C, low_res_logits Cx256x256)``; ``C`` is 3 with
        ``multimask_output`` and 1 otherwise; masks are boolean unless ``return_logits``.
        """
        self._require_image()
        prompts = self._prompt_tensors(point_coords, point_labels, box, mask_input)
        masks, iou_predictions, low_res_masks = self.predict_torch(
            *prompts, multimask_output=multimask_output, return_logits=return_logits
        )
        return masks[0].numpy(), iou_predictions[0].numpy(), low_res_masks[0].numpy()

    @torch.no_grad()
    def predict_best(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
    ) -> Tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        """Like :meth:`predict`, but bring only the highest-scoring candidate to full size.

        For previews that show one mask: the full-size upsampling is most of a click's cost on
        large photos. Returns ``(mask HxW bool, index of that candidate, iou_predictions C,
        low_res_logits Cx256x256)``; ``mask`` equals ``predict(...)[0][index]``.
        """
        self._require_image()
        prompts = self._prompt_tensors(point_coords, point_labels, box, mask_input)
        low_res_masks, iou_predictions = self._decode(*prompts, multimask_output=multimask_output)
        best = int(torch.argmax(iou_predictions[0]))
        mask = self._upscale(low_res_masks[:, best: best + 1], return_logits=False)
        return mask[0, 0].numpy(), best, iou_predictions[0].numpy(), low_res_masks[0].numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prediction with prompts already in the model's input frame (see segment-anything)."""
        self._require_image()
        low_res_masks, iou_predictions = self._decode(point_coords, point_labels, boxes, mask_input,
                                                      multimask_output=multimask_output)
        return self._upscale(low_res_masks, return_logits), iou_predictions, low_res_masks

    def _decode(self, point_coords: Optional[torch.Tensor], point_labels: Optional[torch.Tensor],
                boxes: Optional[torch.Tensor], mask_input: Optional[torch.Tensor], *,
                multimask_output: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder and mask decoder: ``(low_res_logits BxCx256x256, iou_predictions BxC)``."""
        if point_coords is None and boxes is None and mask_input is None:
            raise ValueError("no prompt given: pass points, a box or a mask input")
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse_embeddings, dense_embeddings = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        cpu = self.features.device.type == "cpu"  # the fast paths are CPU implementations
        decoder = fast_decoder_for(self.model) if self.fast_decoder and mask_input is None and cpu else None
        if decoder is not None:
            ctx = image_context(decoder, self.features, cached_dense_pe(self.model))
            return decoder(ctx, sparse_embeddings, multimask_output)
        return self.model.mask_decoder(
            image_embeddings=self.features,
            image_pe=cached_dense_pe(self.model),
            sparse_prompt_embeddings=sparse_embeddings,
            dense_prompt_embeddings=dense_embeddings,
            multimask_output=multimask_output,
        )

    def _upscale(self, low_res_masks: torch.Tensor, return_logits: bool) -> torch.Tensor:
        """Full-size logits, or boolean masks (on CPU without PyTorch's arithmetic for every pixel)."""
        size = self.model.image_encoder.img_size
        if return_logits or self.features.device.type != "cpu":
            masks = upscale_logits(low_res_masks, size, self.input_size, self.original_size)
            return masks if return_logits else masks > self.model.mask_threshold
        threshold = threshold_upscaled if self.exact_masks else threshold_resized
        return threshold(low_res_masks, size, self.input_size, self.original_size, self.model.mask_threshold)

    def get_image_embedding(self) -> torch.Tensor:
        """The ``1x256x64x64`` embedding of the current image."""
        self._require_image()
        return self.features

    def reset_image(self) -> None:
        """Forget the current image."""
        self.is_image_set = False
        self.features: torch.Tensor | None = None
        self.orig_h = self.orig_w = self.input_h = self.input_w = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")


def warm_up(sam_model: Sam, image_hw: Tuple[int, int] = (480, 640)) -> float:
    """Pay a model's one-off costs before the first real request; returns the seconds it took.

    Encodes a synthetic ``image_hw`` image and decodes a point and a box prompt once (float32
    paths, the predictor's defaults). That selects the oneDNN kernels of every layer shape, grows
    the process heap to its working size, builds the decoder snapshot and the mask-upsampling
    tables, and loads (or compiles) the mask step's loop: on the demo's first request these cost
    about as much as the request itself. Nothing is stored in any embedding cache.
    """
    t0 = time.perf_counter()
    h, w = int(image_hw[0]), int(image_hw[1])
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx // 32 + yy // 32) % 2 * 255],
                     axis=-1).astype(np.uint8)
    predictor = SamPredictor(sam_model, cache=False)
    predictor.set_image(image)
    predictor.predict(point_coords=np.array([[w / 2, h / 2]]), point_labels=np.array([1]), multimask_output=True)
    predictor.predict_best(box=np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4]), multimask_output=False)
    predictor.reset_image()
    return time.perf_counter() - t0
