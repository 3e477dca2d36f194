"""The TFLite target: lower edgeq's QDQ ONNX model to an int8 .tflite, validate it, run it, profile it."""
