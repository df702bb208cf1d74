"""Benchmarks of mobile_sam_core against the official MobileSAM (``python -m benchmarks.run``)."""
