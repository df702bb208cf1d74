"""A bytes-bounded, thread-safe LRU cache of image embeddings.

Encoding an image is the expensive step (hundreds of milliseconds on a CPU); prompting is cheap.
Predictors share one cache so that a second click on the same image, from any predictor instance
or any visitor, never runs the encoder again, and a click that arrives while that image is still
being encoded waits for the running encoder instead of starting a second one
(:meth:`EmbeddingCache.get_or_compute`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable

import numpy as np
import torch

__all__ = ["CachedEmbedding", "EmbeddingCache", "default_embedding_cache", "image_digest"]


@dataclass(frozen=True)
class CachedEmbedding:
    """What ``SamPredictor.set_image`` needs to skip the encoder."""

    features: torch.Tensor  # (1, 256, 64, 64)
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.features.element_size() * self.features.nelement()


def image_digest(image: np.ndarray) -> str:
    """Content hash of an image array (shape, dtype and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.shape}|{image.dtype}".encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


class _Flight:
    """One running computation of a key, awaited by the other callers asking for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: CachedEmbedding | None = None


class EmbeddingCache:
    """LRU mapping ``key -> CachedEmbedding`` holding at most ``max_bytes`` of features.

    An entry larger than ``max_bytes`` is not stored. All methods are thread-safe.
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, CachedEmbedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight] = {}
        self.hits = 0
        self.misses = 0

    def _lookup(self, key: Hashable) -> CachedEmbedding | None:
        """The entry (made most recent, counted as a hit) or None; the caller holds the lock."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            self.hits += 1
        return item

    def get(self, key: Hashable) -> CachedEmbedding | None:
        with self._lock:
            item = self._lookup(key)
            if item is None:
                self.misses += 1
            return item

    def get_or_compute(self, key: Hashable, compute: Callable[[], CachedEmbedding]) -> tuple[CachedEmbedding, bool]:
        """The entry for ``key``, made by ``compute()`` on a miss; returns ``(item, was_cached)``.

        One computation per key at a time: callers asking for a key that another thread is
        computing wait for it and get its result (``was_cached`` True). If that computation
        raises, the next waiter computes instead.
        """
        while True:
            with self._lock:
                item = self._lookup(key)
                if item is not None:
                    return item, True
                flight = self._flights.get(key)
                if flight is None:
                    flight = self._flights[key] = _Flight()
                    self.misses += 1
                    break
            flight.done.wait()
            if flight.result is not None:  # also when too large to be kept
                with self._lock:
                    self.hits += 1
                return flight.result, True
        try:
            item = compute()
            flight.result = item
            self.put(key, item)
            return item, False
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    def put(self, key: Hashable, item: CachedEmbedding) -> None:
        size = item.nbytes
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if size > self.max_bytes:
                return
            self._items[key] = item
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    @property
    def nbytes(self) -> int:
        """Bytes of features currently held."""
        with self._lock:
            return self._bytes


_default: EmbeddingCache | None = None
_default_lock = threading.Lock()


def default_embedding_cache() -> EmbeddingCache:
    """The process-wide cache (size from ``MOBILE_SAM_EMBEDDING_CACHE_MB``, default 256 MB)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = EmbeddingCache(int(float(os.environ.get("MOBILE_SAM_EMBEDDING_CACHE_MB", "256")) * 2**20))
        return _default
