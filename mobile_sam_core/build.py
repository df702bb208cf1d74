"""Model construction, the ``sam_model_registry`` and checkpoint loading.

Every model is a :class:`segment_anything.modeling.Sam`: SAM's prompt encoder and mask decoder
(unchanged in MobileSAM) around an image encoder, so code written for segment-anything works on
the returned objects.
"""

from __future__ import annotations

import itertools
import pickle
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from segment_anything import build_sam_vit_b, build_sam_vit_h, build_sam_vit_l
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from .modeling.tiny_vit import TinyViTEncoder, official_to_timm_keys

__all__ = [
    "CheckpointError",
    "ModelSpec",
    "MODEL_SPECS",
    "LoadedModel",
    "sam_model_registry",
    "build_sam",
    "build_model",
    "load_checkpoint",
    "count_parameters",
]

_SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
_SAM_PIXEL_STD = (58.395, 57.12, 57.375)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used for the requested model."""


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model is and how to build it with random weights."""

    name: str
    title: str
    description: str
    image_size: int
    factory: Callable[[], Sam] = field(repr=False)


def _sam_decoder_parts(image_size: int) -> tuple[PromptEncoder, MaskDecoder]:
    prompt_encoder = PromptEncoder(
        embed_dim=256,
        image_embedding_size=(64, 64),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def _tiny_vit_sam(image_size: int, patch_stride: int, pixel_mean: tuple, pixel_std: tuple) -> Sam:
    prompt_encoder, mask_decoder = _sam_decoder_parts(image_size)
    return Sam(
        image_encoder=TinyViTEncoder(img_size=image_size, patch_stride=patch_stride),
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        pixel_mean=list(pixel_mean),
        pixel_std=list(pixel_std),
    )


def _mobile_sam() -> Sam:
    return _tiny_vit_sam(1024, 4, _SAM_PIXEL_MEAN, _SAM_PIXEL_STD)


def _lite_medsam() -> Sam:
    # LiteMedSAM scales pixels to [0, 1] instead of SAM's mean/std normalisation.
    return _tiny_vit_sam(256, 1, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))


MODEL_SPECS: dict[str, ModelSpec] = {
    "vit_t": ModelSpec(
        "vit_t", "MobileSAM (TinyViT-5M)",
        "SAM's prompt encoder and mask decoder with a 5.8M-parameter TinyViT image encoder "
        "distilled from SAM ViT-H.", 1024, _mobile_sam),
    "vit_b": ModelSpec("vit_b", "SAM ViT-B", "Segment Anything with the ViT-B image encoder (91M).",
                       1024, lambda: build_sam_vit_b(None)),
    "vit_l": ModelSpec("vit_l", "SAM ViT-L", "Segment Anything with the ViT-L image encoder (308M).",
                       1024, lambda: build_sam_vit_l(None)),
    "vit_h": ModelSpec("vit_h", "SAM ViT-H", "Segment Anything with the ViT-H image encoder (632M).",
                       1024, lambda: build_sam_vit_h(None)),
    "lite_medsam": ModelSpec(
        "lite_medsam", "LiteMedSAM (TinyViT, 256 px)",
        "A TinyViT-SAM trained on medical images with box prompts; 256-pixel input.", 256, _lite_medsam),
}


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def _describe_checkpoint(state: Mapping[str, Any]) -> str:
    """Best guess of which architecture a SAM-family state dict belongs to."""
    keys = list(state.keys())
    stem = state.get("image_encoder.patch_embed.seq.0.c.weight",
                     state.get("image_encoder.patch_embed.conv1.conv.weight"))
    if stem is not None and hasattr(stem, "shape"):
        return "a LiteMedSAM (lite_medsam) checkpoint" if stem.shape[-1] == 1 else "a MobileSAM (vit_t) checkpoint"
    vit = state.get("image_encoder.patch_embed.proj.weight")
    if vit is not None and hasattr(vit, "shape"):
        kind = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}.get(int(vit.shape[0]), f"width {vit.shape[0]}")
        return f"a SAM ViT ({kind}) checkpoint"
    if not any(k.startswith(("image_encoder.", "mask_decoder.", "prompt_encoder.")) for k in keys):
        sample = ", ".join(keys[:3]) or "no keys"
        return f"a state dict of some other network (first keys: {sample})"
    return "a SAM-family checkpoint of an unknown variant"


def _unreadable(path: Path, expected: str, why: str) -> CheckpointError:
    size = path.stat().st_size if path.exists() else 0
    return CheckpointError(
        f"{path} could not be read as a PyTorch checkpoint ({size:,} bytes; truncated or not a "
        f"checkpoint?). Expected {expected}. Reader said: {why}"
    )


def _read_state_dict(path: Path, expected: str) -> dict[str, torch.Tensor]:
    with open(path, "rb") as fh:
        head = fh.read(2)
    # torch.save writes a zip archive ("PK"); very old files are raw pickles (protocol byte 0x80).
    if head != b"PK" and head[:1] != b"\x80":
        raise _unreadable(path, expected, f"the file starts with {head!r}, not a zip archive or pickle")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise _unreadable(path, expected, str(exc).splitlines()[0][:200]) from exc
        raise CheckpointError(
            f"{path} holds objects that are not plain tensors and is refused for safety "
            f"(loaded with weights_only=True). Expected {expected}."
        ) from exc
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise _unreadable(path, expected, str(exc).splitlines()[0][:200]) from exc
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} is not a state dict of tensors (found {type(obj).__name__}). Expected {expected}."
        )
    return dict(obj)


def _normalize_keys(model: Sam, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(model.image_encoder, TinyViTEncoder):
        return state
    enc = {k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.")}
    rest = {k: v for k, v in state.items() if not k.startswith("image_encoder.")}
    rest.update({"image_encoder." + k: v for k, v in official_to_timm_keys(enc).items()})
    return rest


def load_checkpoint(model: Sam, path: str | Path, name: str) -> None:
    """Load ``path`` into ``model`` strictly, with errors that say what is wrong.

    The unused TinyViT classification head of the official MobileSAM file is accepted and dropped.
    """
    path = Path(path)
    title = MODEL_SPECS[name].title if name in MODEL_SPECS else name
    expected = f"a {title} ({name}) checkpoint"
    state = _normalize_keys(model, _read_state_dict(path, expected))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own.keys() & state.keys() if state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        found = _describe_checkpoint(_read_state_dict(path, expected))
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            details.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:2])})")
        raise CheckpointError(
            f"{path} does not fit {expected}: it looks like {found}; " + "; ".join(details) + "."
        )
    model.load_state_dict(state, strict=True)


def build_sam(name: str, checkpoint: str | Path | None = None) -> Sam:
    """Build model ``name``; load ``checkpoint`` if given (random weights otherwise).

    The model is returned in eval mode, on the CPU, with weights loaded before the mode switch
    (TinyViT caches its attention biases when evaluated).
    """
    if name not in MODEL_SPECS:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(MODEL_SPECS)}")
    model = MODEL_SPECS[name].factory()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, name)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # Distinguishes models in the embedding cache (id() can be reused after garbage collection).
    model.cache_token = f"{name}:{uuid.uuid4().hex}"  # type: ignore[attr-defined]
    model.model_name = name  # type: ignore[attr-defined]
    return model


class _Registry(dict):
    """``sam_model_registry[name](checkpoint=...)`` like segment-anything's, plus ``default``."""

    def __missing__(self, key: str) -> Callable[..., Sam]:
        raise KeyError(f"unknown model {key!r}; choose one of {', '.join(MODEL_SPECS)}")


def _builder(name: str) -> Callable[..., Sam]:
    def build(checkpoint: str | Path | None = None) -> Sam:
        return build_sam(name, checkpoint)

    build.__name__ = f"build_sam_{name}"
    build.__doc__ = f"Build {MODEL_SPECS[name].title}; load ``checkpoint`` when given."
    return build


sam_model_registry: dict[str, Callable[..., Sam]] = _Registry(
    itertools.chain(((n, _builder(n)) for n in MODEL_SPECS), [("default", _builder("vit_h"))])
)


@dataclass
class LoadedModel:
    """A built model together with where its weights came from."""

    model: Sam
    name: str
    checkpoint: Any  # weights.ResolvedCheckpoint, or None for random weights

    @property
    def spec(self) -> ModelSpec:
        return MODEL_SPECS[self.name]


def build_model(
    name: str = "vit_t",
    checkpoint: str | Path | None = None,
    *,
    allow_download: bool | None = None,
    allow_fallback: bool = True,
    random_weights: bool = False,
) -> LoadedModel:
    """Resolve weights for ``name`` (see :mod:`mobile_sam_core.weights`) and build the model.

    ``vit_t`` falls back to the bundled LiteMedSAM when MobileSAM's weights cannot be found or
    downloaded (unless ``allow_fallback=False``); ``LoadedModel.name`` says which model was built.
    ``random_weights=True`` skips weight resolution (tests, benchmarks).
    """
    if random_weights:
        return LoadedModel(build_sam(name), name, None)
    from .weights import resolve_checkpoint

    resolved = resolve_checkpoint(name, checkpoint, allow_download=allow_download, allow_fallback=allow_fallback)
    return LoadedModel(build_sam(resolved.name, resolved.path), resolved.name, resolved)
