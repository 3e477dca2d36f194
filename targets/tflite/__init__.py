"""The TFLite target (target.py): the builtins edgeq writes (builtins.py), the lowering of the QDQ model to a
TFLite graph, one module per op family (lower/), the file rules checked on every model (validate.py), the LiteRT
and TFLite Micro runners (interpreters.py), building and validating the .tflite (artifact.py), profiling
(profile.py) and static analysis (analysis.py)."""
