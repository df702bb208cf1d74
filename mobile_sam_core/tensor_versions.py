"""Cheap change detection for state derived from tensors (fused weights, per-image contexts).

PyTorch bumps a tensor's version counter on every in-place change (``load_state_dict`` copies
into the existing parameters), so ``(id, version)`` pairs tell whether a cached derivative is
stale without hashing any data.
"""

from __future__ import annotations

import torch

__all__ = ["tensor_version", "weights_fingerprint"]


def tensor_version(t: torch.Tensor) -> int:
    """``t._version``, or -1 for inference tensors (they have no counter and cannot change)."""
    try:
        return t._version
    except RuntimeError:
        return -1


def weights_fingerprint(module: torch.nn.Module) -> tuple:
    """``(id, version)`` of every parameter and buffer of ``module``."""
    return tuple((id(t), tensor_version(t)) for t in module.state_dict(keep_vars=True).values())
