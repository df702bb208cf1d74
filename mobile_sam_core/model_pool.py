"""Models loaded lazily by name and kept under a memory budget (least recently used unloaded first).

A :class:`ModelPool` is shared by everything in a process that needs "some model by name" (the
demo's Compare tab, batch comparisons). It

- builds a model the first time it is asked for, through the weights resolution of
  :mod:`mobile_sam_core.weights` (never silently serving a fallback: asking for ``vit_t``
  without MobileSAM's weights is an error that says how to get them), from an explicit
  checkpoint given to the pool, with random weights, or with a custom builder (tests);
- estimates a model's memory before building it (parameter + buffer bytes of the architecture,
  computed on PyTorch's ``meta`` device, which allocates nothing) and measures it after;
- keeps the total under ``budget_bytes`` (``MOBILE_SAM_MODEL_BUDGET_MB``, default
  :data:`DEFAULT_BUDGET_MB`), unloading the least recently used idle model when a new one
  would not fit; a model in use (between :meth:`ModelPool.acquire` and its release) is never
  unloaded;
- loads each model under its own lock: loading ViT-H does not hold up requests on a model that
  is already loaded, and two requests for the same model load it once;
- reports loading progress through a callback ``progress(fraction, message)``.

Example::

    pool = ModelPool()
    with pool.use("vit_t") as model:          # built on first use, then kept
        predictor = SamPredictor(model)

This module imports no UI code.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from .build import MODEL_SPECS, build_sam
from .weights import (
    WEIGHT_SPECS,
    CheckpointNotFoundError,
    WeightsUnavailableError,
    download_checkpoint,
    offline_mode,
    resolve_checkpoint,
)

__all__ = [
    "DEFAULT_BUDGET_MB",
    "ENV_BUDGET",
    "ModelAvailability",
    "ModelPool",
    "ModelTooLargeError",
    "PoolBusyError",
    "PoolEvent",
    "PooledModel",
    "default_budget_bytes",
    "estimate_model_bytes",
    "format_memory",
    "model_nbytes",
]

log = logging.getLogger(__name__)

ENV_BUDGET = "MOBILE_SAM_MODEL_BUDGET_MB"
#: Default budget: MobileSAM (41 MB) + SAM ViT-B (375 MB) + LiteMedSAM (41 MB) with room to
#: spare. ViT-L (1.25 GB) and ViT-H (2.56 GB) need a larger MOBILE_SAM_MODEL_BUDGET_MB.
DEFAULT_BUDGET_MB = 1024
_MB = 2**20

Progress = Callable[[float, str], None]


class ModelTooLargeError(RuntimeError):
    """A model does not fit into the pool's budget even with every other model unloaded."""


class PoolBusyError(RuntimeError):
    """No room for a model because the models filling the budget are all in use."""


def model_nbytes(model: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = t.data_ptr() if t.device.type != "meta" else id(t)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


_estimates: dict[str, int] = {}
_estimates_lock = threading.Lock()


def estimate_model_bytes(name: str) -> int:
    """Parameter + buffer bytes of registered model ``name``, without allocating its weights.

    The architecture is built on PyTorch's ``meta`` device (shapes only, a fraction of a second);
    the result is remembered.
    """
    with _estimates_lock:
        if name in _estimates:
            return _estimates[name]
    if name not in MODEL_SPECS:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(MODEL_SPECS)}")
    with torch.device("meta"):
        skeleton = MODEL_SPECS[name].factory()
    nbytes = model_nbytes(skeleton)
    del skeleton
    with _estimates_lock:
        _estimates[name] = nbytes
    return nbytes


def default_budget_bytes() -> int:
    """``MOBILE_SAM_MODEL_BUDGET_MB`` in bytes (default :data:`DEFAULT_BUDGET_MB`)."""
    value = os.environ.get(ENV_BUDGET, "").strip()
    if value:
        try:
            mb = float(value)
            if mb > 0:
                return int(mb * _MB)
        except ValueError:
            pass
        log.warning("ignoring %s=%r (not a positive number of MB); using %d MB", ENV_BUDGET, value, DEFAULT_BUDGET_MB)
    return DEFAULT_BUDGET_MB * _MB


def format_memory(n: int | None) -> str:
    """A memory size in the binary units of the model budget (``MOBILE_SAM_MODEL_BUDGET_MB``)."""
    if n is None:
        return "unknown size"
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / _MB:.0f} MB"


@dataclass(frozen=True)
class ModelAvailability:
    """Whether a model can be loaded here, and if not, how to get its weights.

    ``source`` is where the weights would come from (``explicit|env|cache|bundled|random|custom``)
    or None when missing; ``downloadable`` says a download could fetch them now (official URL
    and not offline); ``message`` is fit to show a user (how to get them, or why it won't fit);
    ``how_to`` is only the instructions for providing missing weights by hand (see
    :class:`~mobile_sam_core.weights.WeightsUnavailableError`), empty when they are present.
    """

    name: str
    title: str
    available: bool
    source: str | None
    path: str | None
    downloadable: bool
    download_bytes: int | None
    estimated_bytes: int
    fits_budget: bool
    message: str
    how_to: str = ""

    @property
    def usable(self) -> bool:
        """Weights present and the model fits the budget."""
        return self.available and self.fits_budget


@dataclass(frozen=True)
class PoolEvent:
    """Something the pool did: ``load``, ``adopt``, ``unload`` (asked for) or ``evict`` (to make room)."""

    kind: str
    name: str
    nbytes: int
    seconds: float = 0.0
    at: float = field(default_factory=time.time)


@dataclass
class _Entry:
    name: str
    model: Any
    nbytes: int
    source: str
    path: str | None
    load_seconds: float
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)
    pinned: bool = False  # adopted from elsewhere: never unloaded by the pool


@dataclass(frozen=True)
class PooledModel:
    """A model handed out by :meth:`ModelPool.acquire`; call :meth:`release` when done."""

    name: str
    model: Any  # segment_anything.modeling.Sam
    source: str
    path: str | None
    nbytes: int
    load_seconds: float  # 0.0 when it was already loaded
    _pool: "ModelPool" = field(repr=False, compare=False)
    _released: list = field(default_factory=lambda: [False], repr=False, compare=False)

    @property
    def title(self) -> str:
        return MODEL_SPECS[self.name].title if self.name in MODEL_SPECS else self.name

    def release(self) -> None:
        """Let the pool unload this model again when it needs room (idempotent)."""
        if not self._released[0]:
            self._released[0] = True
            self._pool._release(self.name)

    def __enter__(self) -> "PooledModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class ModelPool:
    """Lazily built models under a memory budget; thread-safe.

    Arguments:
        budget_bytes: most bytes of model weights held at once (default from
            ``MOBILE_SAM_MODEL_BUDGET_MB``).
        checkpoints: explicit checkpoint per model name (not hash-checked; fine-tuned weights
            are welcome); these names count as available.
        random_weights: build every model without a checkpoint with random weights (tests,
            UI work); all registered models count as available.
        allow_download: let loading download missing official weights (default False: a
            download is an explicit step, see :meth:`download`).
        wait_s: how long :meth:`acquire` waits for models in use to be released when they fill
            the budget, before raising :class:`PoolBusyError`.
    """

    def __init__(
        self,
        budget_bytes: int | None = None,
        *,
        checkpoints: Mapping[str, str | os.PathLike[str]] | None = None,
        random_weights: bool = False,
        allow_download: bool = False,
        wait_s: float = 120.0,
    ) -> None:
        self.budget_bytes = int(budget_bytes) if budget_bytes is not None else default_budget_bytes()
        if self.budget_bytes <= 0:
            raise ValueError("budget_bytes must be positive")
        self.checkpoints = {k: str(v) for k, v in (checkpoints or {}).items() if v}
        for name in self.checkpoints:
            self._check_name(name)
        self.random_weights = random_weights
        self.allow_download = allow_download
        self.wait_s = wait_s
        self._builders: dict[str, tuple[Callable[[], Any], int | None, str]] = {}
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._reserved: dict[str, int] = {}  # bytes set aside for models being loaded
        self._cond = threading.Condition(threading.RLock())
        self._load_locks: dict[str, threading.Lock] = {}
        self.events: deque[PoolEvent] = deque(maxlen=200)
        self._listeners: list[Callable[[PoolEvent], None]] = []

    # ------------------------------------------------------------------------- registry

    def register(self, name: str, builder: Callable[[], Any], *, estimated_bytes: int | None = None,
                 title: str | None = None) -> None:
        """Serve ``name`` from ``builder()`` (e.g. a tiny test model); overrides a registered name.

        Without ``estimated_bytes`` the model is measured after building (the budget is then
        enforced afterwards, by unloading other idle models).
        """
        with self._cond:
            self._builders[name] = (builder, estimated_bytes, title or name)

    def names(self) -> list[str]:
        """Every model name the pool can be asked for (registered models first)."""
        return list(MODEL_SPECS) + [n for n in self._builders if n not in MODEL_SPECS]

    def title(self, name: str) -> str:
        if name in self._builders:
            return self._builders[name][2] if name not in MODEL_SPECS else MODEL_SPECS[name].title
        return MODEL_SPECS[name].title if name in MODEL_SPECS else name

    def add_listener(self, listener: Callable[[PoolEvent], None]) -> None:
        """Call ``listener(event)`` on every load, unload and eviction (logging, UIs)."""
        self._listeners.append(listener)

    def _check_name(self, name: str) -> None:
        if name not in MODEL_SPECS and name not in getattr(self, "_builders", {}):
            raise KeyError(f"unknown model {name!r}; choose one of {', '.join(self.names())}")

    def estimate(self, name: str) -> int:
        """Expected bytes of ``name`` once loaded (measured size if it is loaded)."""
        with self._cond:
            if name in self._entries:
                return self._entries[name].nbytes
            custom = self._builders.get(name)
        if custom is not None:
            return int(custom[1] or 0)
        return estimate_model_bytes(name)

    # ------------------------------------------------------------------------- availability

    def availability(self, name: str) -> ModelAvailability:
        """Whether ``name`` can be loaded now (no download, no hashing beyond the cache check)."""
        self._check_name(name)
        estimated = self.estimate(name)
        fits = estimated <= self.budget_bytes
        title = self.title(name)
        too_big = (f"{title} needs about {format_memory(estimated)} of memory, more than the model budget of "
                   f"{format_memory(self.budget_bytes)}; raise {ENV_BUDGET} to load it.")
        spec = WEIGHT_SPECS.get(name)
        downloadable = bool(spec and spec.url and not offline_mode())
        size = spec.size if spec else None

        def result(available: bool, source: str | None, path: str | None, message: str,
                   how_to: str = "") -> ModelAvailability:
            if available and not fits:
                message = too_big
            return ModelAvailability(name, title, available, source, path, downloadable and not available,
                                     size, estimated, fits, message, how_to)

        with self._cond:
            entry = self._entries.get(name)
        if entry is not None and entry.pinned:  # adopted: usable whatever the weights resolution says
            return result(True, entry.source, entry.path, f"{title}: already loaded ({entry.source})")
        if name in self._builders:
            return result(True, "custom", None, f"{title}: custom builder")
        if name in self.checkpoints:
            path = Path(self.checkpoints[name])
            if path.is_file():
                return result(True, "explicit", str(path), f"{title}: {path}")
            return result(False, None, None, f"the checkpoint given for {title} does not exist: {path}")
        if self.random_weights:
            return result(True, "random", None, f"{title}: random weights")
        try:
            resolved = resolve_checkpoint(name, allow_download=False, allow_fallback=False, progress=False)
        except WeightsUnavailableError as exc:
            message = str(exc).replace("downloads are disabled (allow_download=False)",
                                       "they have not been downloaded yet")
            return result(False, None, None, message, exc.how_to)
        return result(True, resolved.source, str(resolved.path), f"{title}: {resolved.path} ({resolved.source})")

    def available(self) -> dict[str, ModelAvailability]:
        """:meth:`availability` of every model."""
        return {name: self.availability(name) for name in self.names()}

    def download(self, name: str, on_progress: Callable[[int, int | None], None] | None = None) -> Path:
        """Download ``name``'s official weights into the cache (see ``weights.download_checkpoint``).

        ``on_progress(done_bytes, total_bytes)`` is called while it runs. Raises
        :class:`~mobile_sam_core.weights.WeightsUnavailableError` (offline, no URL, failure).
        """
        self._check_name(name)
        return download_checkpoint(name, progress=False, on_progress=on_progress)

    # ------------------------------------------------------------------------- loading

    def _load_lock(self, name: str) -> threading.Lock:
        with self._cond:
            return self._load_locks.setdefault(name, threading.Lock())

    def _used(self) -> int:
        return sum(e.nbytes for e in self._entries.values()) + sum(self._reserved.values())

    def _emit(self, event: PoolEvent) -> None:
        self.events.append(event)
        log.info("model pool: %s %s (%s)", event.kind, event.name, format_memory(event.nbytes))
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break loading
                log.exception("model pool listener failed")

    def _evict_one(self, exclude: str | None = None) -> bool:
        """Unload the least recently used idle model (caller holds the lock)."""
        for name, entry in self._entries.items():  # least recently used first
            if entry.in_use == 0 and not entry.pinned and name != exclude:
                del self._entries[name]
                self._emit(PoolEvent("evict", name, entry.nbytes))
                return True
        return False

    def _make_room(self, name: str, needed: int) -> None:
        """Evict idle models until ``needed`` more bytes fit (caller holds the lock)."""
        if needed > self.budget_bytes:
            raise ModelTooLargeError(
                f"{self.title(name)} needs about {format_memory(needed)} of memory, more than the model budget "
                f"of {format_memory(self.budget_bytes)}; raise {ENV_BUDGET} to load it."
            )
        deadline = time.monotonic() + self.wait_s
        evicted = False
        while self._used() + needed > self.budget_bytes:
            if self._evict_one(exclude=name):
                evicted = True
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                busy = ", ".join(f"{n} ({format_memory(e.nbytes)})" for n, e in self._entries.items()) or "none"
                raise PoolBusyError(
                    f"no room for {self.title(name)} ({format_memory(needed)}) in the model budget of "
                    f"{format_memory(self.budget_bytes)}: the loaded models are in use ({busy}); try again shortly."
                )
            self._cond.wait(timeout=min(left, 1.0))
        if evicted:
            gc.collect()

    def acquire(self, name: str, progress: Progress | None = None) -> PooledModel:
        """The model ``name``, loaded if needed; it stays loaded until :meth:`PooledModel.release`.

        ``progress(fraction, message)`` is called while loading (not when already loaded).
        Raises ``WeightsUnavailableError`` (weights missing; the message says how to get them),
        ``CheckpointError``, :class:`ModelTooLargeError` or :class:`PoolBusyError`.
        """
        self._check_name(name)
        with self._cond:
            entry = self._entries.get(name)
            if entry is not None:
                return self._lease(entry, 0.0)
        with self._load_lock(name):  # one loader per model; others wait here, not on the pool
            estimate = self.estimate(name)
            with self._cond:
                entry = self._entries.get(name)
                if entry is not None:
                    return self._lease(entry, 0.0)
                self._make_room(name, estimate)
                self._reserved[name] = estimate
            try:
                t0 = time.perf_counter()
                model, source, path = self._build(name, progress)
                seconds = time.perf_counter() - t0
            except BaseException:
                with self._cond:
                    self._reserved.pop(name, None)
                    self._cond.notify_all()
                raise
            nbytes = model_nbytes(model)
            with self._cond:
                self._reserved.pop(name, None)
                entry = _Entry(name, model, nbytes, source, path, seconds)
                self._entries[name] = entry
                lease = self._lease(entry, seconds)
                self._emit(PoolEvent("load", name, nbytes, seconds))
                # The estimate may have been low (custom builders): restore the budget.
                while self._used() > self.budget_bytes and self._evict_one(exclude=name):
                    pass
                self._cond.notify_all()
            if progress:
                progress(1.0, f"{self.title(name)} loaded in {seconds:.1f} s")
            return lease

    @contextmanager
    def use(self, name: str, progress: Progress | None = None) -> Iterator[Any]:
        """``with pool.use(name) as model:`` — :meth:`acquire` and release around a block."""
        lease = self.acquire(name, progress)
        try:
            yield lease.model
        finally:
            lease.release()

    def _lease(self, entry: _Entry, seconds: float) -> PooledModel:
        entry.in_use += 1
        entry.last_used = time.monotonic()
        self._entries.move_to_end(entry.name)
        return PooledModel(entry.name, entry.model, entry.source, entry.path, entry.nbytes, seconds, self)

    def _release(self, name: str) -> None:
        with self._cond:
            entry = self._entries.get(name)
            if entry is not None and entry.in_use > 0:
                entry.in_use -= 1
                entry.last_used = time.monotonic()
            self._cond.notify_all()

    def _build(self, name: str, progress: Progress | None) -> tuple[Any, str, str | None]:
        title = self.title(name)

        def report(fraction: float, message: str) -> None:
            if progress:
                progress(fraction, message)

        custom = self._builders.get(name)
        if custom is not None:
            report(0.1, f"building {title}")
            return custom[0](), "custom", None
        if name in self.checkpoints:
            path = self.checkpoints[name]
            if not Path(path).is_file():
                raise CheckpointNotFoundError(f"checkpoint for {name} does not exist: {path}")
            report(0.2, f"loading {title} from {Path(path).name}")
            return build_sam(name, path), "explicit", path
        if self.random_weights:
            report(0.2, f"building {title} with random weights")
            return build_sam(name), "random", None
        report(0.0, f"looking for {title} weights")

        def on_download(done: int, total: int | None) -> None:
            if total:
                report(0.7 * done / total, f"downloading {title}: {done / 1e6:.0f} of {total / 1e6:.0f} MB")

        resolved = resolve_checkpoint(name, allow_download=self.allow_download, allow_fallback=False,
                                      progress=False, on_progress=on_download)
        report(0.75, f"loading {title} weights ({resolved.path.name})")
        return build_sam(name, resolved.path), resolved.source, str(resolved.path)

    def adopt(self, name: str, model: Any, *, source: str = "external", path: str | None = None) -> bool:
        """Serve an already built model as ``name`` (e.g. the model an app loaded anyway).

        The model is counted in the budget but never unloaded by the pool (whoever built it
        keeps it alive). Requests then share its weights and its embedding-cache entries.
        Returns False when ``name`` is already loaded (nothing changes).
        """
        self._check_name(name)
        with self._cond:
            if name in self._entries or name in self._reserved:
                return False
            nbytes = model_nbytes(model)
            self._entries[name] = _Entry(name, model, nbytes, source, path, 0.0, pinned=True)
            self._emit(PoolEvent("adopt", name, nbytes))
            while self._used() > self.budget_bytes and self._evict_one(exclude=name):
                pass
            self._cond.notify_all()
            return True

    # ------------------------------------------------------------------------- state

    def unload(self, name: str) -> bool:
        """Unload ``name`` now if loaded and idle; True if it was unloaded."""
        with self._cond:
            entry = self._entries.get(name)
            if entry is None or entry.in_use or entry.pinned:
                return False
            del self._entries[name]
            self._emit(PoolEvent("unload", name, entry.nbytes))
            self._cond.notify_all()
        gc.collect()
        return True

    def clear(self) -> None:
        """Unload every idle model."""
        for name in list(self._entries):
            self.unload(name)

    def is_loaded(self, name: str) -> bool:
        with self._cond:
            return name in self._entries

    def is_loading(self, name: str) -> bool:
        with self._cond:
            return name in self._reserved

    def loaded(self) -> list[dict[str, Any]]:
        """Loaded models, least recently used first: name, bytes, source, in_use, load seconds."""
        with self._cond:
            return [{"name": e.name, "nbytes": e.nbytes, "source": e.source, "path": e.path,
                     "in_use": e.in_use, "pinned": e.pinned, "load_seconds": round(e.load_seconds, 3)}
                    for e in self._entries.values()]

    @property
    def used_bytes(self) -> int:
        """Bytes of loaded models plus those being loaded."""
        with self._cond:
            return self._used()

    def describe(self) -> str:
        """One line: budget, use, loaded models."""
        with self._cond:
            names = ", ".join(f"{n} ({format_memory(e.nbytes)})" for n, e in self._entries.items()) or "none"
            return f"model budget {format_memory(self.budget_bytes)}, in use {format_memory(self._used())}: {names}"
