"""C++ kernels compiled on first use (``mobile_sam_core/kernels/*.cpp``).

A kernel is built once per machine with the system's C++ compiler (``CXX``, else ``g++``, ``c++``
or ``clang++``) for the CPU at hand (``-march=native``) and cached as a shared library under
``<weights cache>/native/`` (``MOBILE_SAM_CACHE_DIR``, default ``~/.cache/mobile_sam_core``). The
file name carries a hash of the source, the compiler's version, the flags and the CPU's feature
flags, so a changed kernel, compiler or machine builds a new one. Building takes 2-3 seconds;
later processes load the cached library in milliseconds.

Everything here is optional: without a compiler, when a build or a kernel's self-check fails, or
with ``MOBILE_SAM_NO_COMPILED_KERNELS`` set, :func:`load_kernel` returns None and callers keep
their PyTorch (or OpenCV) path. The reason is logged once and kept in :func:`native_status`.

Kernels use OpenMP and are linked by soname (``libgomp.so.1``); loaded after ``torch``, they share
PyTorch's own libgomp and thread pool instead of starting a second one.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, TypeVar

log = logging.getLogger(__name__)

__all__ = [
    "KERNEL_DIR", "compiled_kernels_disabled", "compiler", "compiler_version", "flag_check", "load_kernel",
    "load_wrapped", "native_status",
]

KERNEL_DIR = Path(__file__).with_name("kernels")
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-fPIC", "-shared", "-std=c++17")
BUILD_TIMEOUT_S = 120

_lock = threading.Lock()
_loaded: Dict[str, Optional[ctypes.CDLL]] = {}
_status: Dict[str, str] = {}
_wrapped: Dict[str, Tuple[ctypes.CDLL, Any]] = {}

Check = Optional[Callable[[ctypes.CDLL], bool]]
W = TypeVar("W")


def compiled_kernels_disabled() -> bool:
    """True when ``MOBILE_SAM_NO_COMPILED_KERNELS`` is set (to anything but 0)."""
    return os.environ.get("MOBILE_SAM_NO_COMPILED_KERNELS", "") not in ("", "0")


def compiler() -> Optional[str]:
    """The C++ compiler to build with: ``CXX`` if set, else the first of g++, c++, clang++ on PATH."""
    env = os.environ.get("CXX", "").strip()
    if env:
        return shutil.which(env) or (env if os.path.isfile(env) else None)
    for name in ("g++", "c++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


@functools.lru_cache(maxsize=8)
def compiler_version(cxx: str) -> str:
    """``cxx --version`` (asked once per process; "" when it cannot run)."""
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def flag_check(symbol: str) -> Callable[[ctypes.CDLL], bool]:
    """A ``cpu_check`` for :func:`load_kernel`: the library's ``int symbol(void)`` is nonzero
    (kernels report this way whether they were built with the instructions they are written for)."""
    def check(lib: ctypes.CDLL) -> bool:
        fn = getattr(lib, symbol)
        fn.restype = ctypes.c_int
        return bool(fn())

    return check


def _cpu_flags() -> str:
    """The CPU's feature flags (Linux), so a cached ``-march=native`` build never runs elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.machine() + platform.processor()


def _library_path(name: str, source: bytes, cxx: str, flags: Sequence[str]) -> Path:
    h = hashlib.sha256()
    for part in (source, compiler_version(cxx).encode(), " ".join((*FLAGS, *flags)).encode(), _cpu_flags().encode()):
        h.update(part)
        h.update(b"\0")
    from .weights import cache_dir

    return cache_dir() / "native" / f"{name}-{h.hexdigest()[:20]}.so"


def _writable_dir(path: Path) -> Path:
    """``path`` created if need be, or a fresh temporary folder when it cannot be written (the
    library is then built for this process only)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK | os.X_OK):
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="msc-native-"))


def _build(name: str, cxx: str, target: Path, flags: Sequence[str]) -> None:
    """Compile ``kernels/<name>.cpp`` into ``target`` (atomically: concurrent builders are fine)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [cxx, *FLAGS, *flags, "-o", tmp, str(KERNEL_DIR / f"{name}.cpp")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_kernel(name: str, self_check: Check = None, flags: Sequence[str] = (),
                cpu_check: Check = None) -> Optional[ctypes.CDLL]:
    """The compiled library of ``kernels/<name>.cpp`` (built and cached on first use), or None.

    ``cpu_check(lib)`` (optional) says whether the build has what the kernel is meant for (say,
    AVX-512); when it returns False the library is quietly not used. ``self_check(lib)``
    (optional) must then return True; both run once per process. ``flags`` are added after the
    common ``FLAGS`` (a later flag wins). The outcome is cached per process: a failed build is
    not retried.
    """
    if compiled_kernels_disabled():
        with _lock:
            _status[name] = "disabled by MOBILE_SAM_NO_COMPILED_KERNELS"
        return None
    with _lock:
        if name in _loaded:
            return _loaded[name]
        lib = None
        try:
            lib = _load(name, self_check, tuple(flags), cpu_check)
        except Exception as exc:  # a build error, a missing libgomp, an unwritable cache...
            _status[name] = f"unavailable: {exc}"
            log.warning("native kernel %s unavailable, using the uncompiled path instead: %s", name, exc)
        _loaded[name] = lib
        return lib


def load_wrapped(name: str, wrap: Callable[[ctypes.CDLL], W], self_check: Check = None, flags: Sequence[str] = (),
                 cpu_check: Check = None) -> Optional[W]:
    """``wrap(lib)`` for :func:`load_kernel`'s library, made once per library, or None."""
    lib = load_kernel(name, self_check, flags, cpu_check)
    if lib is None:
        return None
    with _lock:
        entry = _wrapped.get(name)
        if entry is None or entry[0] is not lib:  # tests load fresh libraries
            entry = _wrapped[name] = (lib, wrap(lib))
        return entry[1]


def _load(name: str, self_check: Check, flags: Sequence[str], cpu_check: Check) -> Optional[ctypes.CDLL]:
    cxx = compiler()
    if cxx is None:
        _status[name] = "no C++ compiler (set CXX or install g++)"
        log.info("native kernel %s: no C++ compiler found; using the uncompiled path instead", name)
        return None
    import torch  # noqa: F401  (loads PyTorch's libgomp first, so the kernel shares it)

    source = (KERNEL_DIR / f"{name}.cpp").read_bytes()
    path = _library_path(name, source, cxx, flags)
    built = False
    if not path.exists():
        path = _writable_dir(path.parent) / path.name
        _build(name, cxx, path, flags)
        built = True
    lib = ctypes.CDLL(str(path))
    if cpu_check is not None and not cpu_check(lib):
        _status[name] = f"not used: built without what it needs on this CPU ({path})"
        log.info("native kernel %s is not used on this CPU; using the uncompiled path instead", name)
        return None
    if self_check is not None and not self_check(lib):
        _status[name] = f"failed its self-check ({path})"
        log.warning("native kernel %s failed its self-check; using the uncompiled path instead", name)
        return None
    _status[name] = f"{'built' if built else 'loaded'} {path}"
    return lib


def native_status() -> Dict[str, str]:
    """What happened to each kernel this process asked for: loaded/built (with its path),
    disabled, no compiler, not used on this CPU, failed self-check, or the build error."""
    with _lock:
        return dict(_status)
