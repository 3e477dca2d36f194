"""Quantization plan and math: what gets quantized and which tensors share an encoding (plan.py), the affine
grids and how weights, activations and biases are put on them (qparams.py), and every option in one recipe
(recipe.py). docs/quantization-conventions.md states the conventions."""
