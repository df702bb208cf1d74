"""libgomp's spin-wait, shortened before PyTorch loads libgomp (it reads the setting only then).

After each parallel region libgomp's worker threads spin about 300,000 times (~3 ms) before they
sleep. A click alternates PyTorch (OpenMP) with OpenCV's thread pool and NumPy, so on a 2-core
machine the spinning worker takes a core from the mask step that follows the decoder: a
1500x2241 click took ~29 ms instead of ~22 ms in a warm loop. 10,000 spins (~0.1 ms) keep
back-to-back operators (the encoder's) on awake threads and free the core soon after.
"""

from __future__ import annotations

import os
import sys

GOMP_SPINCOUNT = "10000"


def runtime_tuning_disabled() -> bool:
    """True when ``MOBILE_SAM_NO_RUNTIME_TUNING`` is set (to anything but 0): no process-wide
    settings (this one, the allocator's in ``acceleration``)."""
    return os.environ.get("MOBILE_SAM_NO_RUNTIME_TUNING", "") not in ("", "0")


def shorten_openmp_spin() -> bool:
    """Set ``GOMP_SPINCOUNT`` unless PyTorch is already loaded, the user chose an OpenMP wait
    policy or spin count, or ``MOBILE_SAM_NO_RUNTIME_TUNING`` is set; True when it was set."""
    if "torch" in sys.modules or runtime_tuning_disabled():
        return False
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
    return True
