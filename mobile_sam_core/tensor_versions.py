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
    """``(id, version)`` of every parameter and buffer of ``module``.

    Walks the submodules' own tables rather than building a ``state_dict``: this runs on every
    click (~2x cheaper for a mask decoder, ~0.1 ms saved per click).
    """
    return tuple(
        (id(t), tensor_version(t))
        for sub in module.modules()
        for table in (sub._parameters, sub._buffers)
        for t in table.values()
        if t is not None
    )
