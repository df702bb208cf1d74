"""Gradio web app of the MobileSAM CPU demo (``python -m demo``)."""

import os

# A web server interleaves Python work (HTTP, image encoding) with PyTorch ops. OpenMP workers
# that spin-wait after every op take the CPU from that work on a 2-core machine (a click's round
# trip measured ~25% slower). Only effective before torch is loaded; a value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys

# The app runs on CPUs only. Importing torchvision imports torch._dynamo, which imports Triton
# (the GPU kernel compiler that CUDA builds of PyTorch install) only to learn that it exists:
# ~75 MB of resident memory that nothing here uses. A module set to None is "not installed" to
# every later import; one already loaded is left alone.
if "triton" not in sys.modules:
    sys.modules["triton"] = None  # type: ignore[assignment]
