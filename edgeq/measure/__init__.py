"""Measurements shared by every runtime: error sums, SQNR and agreement (metrics.py), timed runs and latency rows
(latency.py), and static analysis rows with the liveness peak of activation memory (footprint.py)."""
