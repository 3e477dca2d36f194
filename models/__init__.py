"""edgeq's model zoo: definitions, training scripts on real data, and small shipped ONNX files."""
