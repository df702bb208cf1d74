"""Gradio web app of the MobileSAM CPU demo (``python -m demo``)."""
