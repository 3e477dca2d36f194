"""Mixed precision: per-layer sensitivity, bit allocation under a budget, accuracy-aware reverts."""
