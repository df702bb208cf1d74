"""Per-visitor state, held in ``gr.State`` (never in module globals).

Handlers receive a :class:`Session` and return a new one (``dataclasses.replace``), so one
visitor's event never mutates an object another event of the same visitor is still reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .core import LoadedImage


@dataclass(frozen=True)
class PackedMasks:
    """Boolean masks (C x H x W) stored as bits: a 1024x1024 candidate costs 128 KB, not 1 MB."""

    bits: np.ndarray
    shape: tuple[int, int, int]
    scores: tuple[float, ...]

    @classmethod
    def pack(cls, masks: np.ndarray, scores: np.ndarray | list[float]) -> "PackedMasks":
        masks = np.asarray(masks, dtype=bool)
        return cls(np.packbits(masks, axis=None), tuple(masks.shape), tuple(float(s) for s in scores))

    def unpack(self) -> np.ndarray:
        count = int(np.prod(self.shape))
        return np.unpackbits(self.bits, count=count).reshape(self.shape).astype(bool)

    def mask(self, index: int) -> np.ndarray:
        return self.unpack()[index]

    def __len__(self) -> int:
        return self.shape[0]


@dataclass(frozen=True)
class Prompts:
    """Clicked points (working-image pixels), their labels (1 foreground, 0 background), a box."""

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None

    def add(self, x: float, y: float, label: int) -> "Prompts":
        return replace(self, points=self.points + ((float(x), float(y)),), labels=self.labels + (int(label),))

    def undo(self) -> "Prompts":
        return replace(self, points=self.points[:-1], labels=self.labels[:-1])

    def clear_points(self) -> "Prompts":
        return replace(self, points=(), labels=())

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None


@dataclass(frozen=True)
class TabResult:
    """The last prediction of a tab, so that choosing another candidate needs no model call."""

    masks: PackedMasks
    chosen: int
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Session:
    """Everything one visitor has done: the image and each tab's prompts and last result."""

    image: LoadedImage | None = None
    image_key: str = ""  # content digest of the working image
    image_name: str = "image"
    point_prompts: Prompts = Prompts()
    point_result: TabResult | None = None
    box_prompts: Prompts = Prompts()
    box_result: TabResult | None = None
    everything_info: dict | None = None

    def with_image(self, image: LoadedImage, key: str, name: str) -> "Session":
        """A fresh session for a new image (prompts and results of the old one are dropped)."""
        return Session(image=image, image_key=key, image_name=name)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the working image."""
        if self.image is None:
            return (0, 0)
        return tuple(self.image.array.shape[:2])  # type: ignore[return-value]
