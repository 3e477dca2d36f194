"""Graph-rewrite passes, one per module (installed as ``edgeq.passes``).

Each pass is an ``onnx_ir`` pass whose docstring states the math it applies and whose ``call`` returns a typed
result. The optional ones (equalize, smooth_quant, range_search, adaround, bias_correction, dyadic) also say how the pipeline
builds them from a recipe (stage.py); a few modules hold what several passes share (adaround_layers.py,
batchnorm_moments.py, clipped_reference.py).
"""
