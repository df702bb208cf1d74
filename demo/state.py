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


class ShownResults:
    """Which result each tab shows right now; the one mutable part of a visitor's session.

    Sessions are replaced, never changed, so a follow-up step that started from an older session
    (writing a result's download files) cannot see that the tab moved on while it ran. This
    holder is shared by every version of one visitor's session (``replace`` keeps it; each
    visitor's first session is a deep copy of the app's initial value, so visitors never share
    one), and the step checks it before offering its files.
    """

    def __init__(self) -> None:
        self._shown: dict[str, object] = {}

    def show(self, tab: str, result: object | None) -> None:
        """Record that ``tab`` now displays ``result`` (None: nothing)."""
        self._shown[tab] = result

    def is_shown(self, tab: str, result: object) -> bool:
        """True while ``result`` is the one ``tab`` displays."""
        return result is not None and self._shown.get(tab) is result

    def clear(self) -> None:
        self._shown.clear()


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
    shown: ShownResults = field(default_factory=ShownResults, compare=False, repr=False)

    def with_image(self, image: LoadedImage, key: str, name: str) -> "Session":
        """A fresh session for a new image (prompts and results of the old one are dropped)."""
        self.shown.clear()  # files still being written for the old image are not offered
        return Session(image=image, image_key=key, image_name=name, shown=self.shown)

    def without_image(self) -> "Session":
        """The session after the image was removed."""
        self.shown.clear()
        return Session(shown=self.shown)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the working image."""
        if self.image is None:
            return (0, 0)
        return tuple(self.image.array.shape[:2])  # type: ignore[return-value]
