"""Graph-rewrite passes, one per module (installed as ``edgeq.passes``).

Each pass is an ``onnx_ir.passes`` pass whose docstring states the math it applies.
"""
