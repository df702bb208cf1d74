"""Gradio web app of the MobileSAM CPU demo (``python -m demo``)."""

import os

# A web server interleaves Python work (HTTP, image encoding) with PyTorch ops. OpenMP workers
# that spin-wait after every op take the CPU from that work on a 2-core machine (a click's round
# trip measured ~25% slower). Only effective before torch is loaded; a value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
