"""The TFLite target: lower edgeq's QDQ ONNX model to an int8 .tflite, check it, run it, profile it.

lower.py (QDQ ONNX -> TFLite graph), validate.py (the file rules the runtimes rely on), versions.py (minimum op
versions), interpreters.py (LiteRT and TFLite Micro runners), artifact.py (emit, validate on data, profile).
"""
