"""Models in and out, safely: output paths and atomic writes (files.py), ONNX files loaded without reading outside
their folder and saved whole (onnx_model.py), and the one helper that makes onnxruntime sessions, with the runs
of a model on data built on it (session.py)."""
