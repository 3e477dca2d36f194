"""The ONNX Runtime target (target.py): the QDQ artifacts and their validation (artifact.py), what onnxruntime
fuses (fusion.py), profiling (profile.py) and static analysis of .onnx files (analysis.py)."""
