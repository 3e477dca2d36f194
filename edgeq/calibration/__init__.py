"""Calibration: streaming observers of tensor statistics (observers.py), the calibration run of the float model
in onnxruntime (collect.py), and data-free calibration: inputs distilled from BatchNorm statistics (synthetic.py)
with the model evaluated in torch (torch_graph.py)."""
