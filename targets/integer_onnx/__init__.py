"""The integer-only ONNX artifact: a quantized model whose arithmetic between the input quantizer and the output
DequantizeLinear is integers only, bit-exact with edgeq's integer reference (TFLite Micro semantics).

It is built from the lowered TFLite graph (targets.tflite.lower), the same graph the reference executor runs,
so it computes exactly what the .tflite computes on TFLite Micro, in any ONNX runtime: ConvInteger and
MatMulInteger accumulate in int32, requantization is MultiplyByQuantizedMultiplier in int64 Mul/Add/BitShift/
Where (requantize.py), MUL multiplies the centred inputs in int64 before it, pools, pads, reshapes and
concatenations move int8 values, LOGISTIC/HARD_SWISH are 256-entry Gather tables filled by the reference kernels,
and SOFTMAX looks up its exponentials by x - max(x) and runs gemmlowp's GetReciprocal as an int64 subgraph
(softmax.py, fixed_point.py). There is no float tensor and no Div inside; :func:`scan_integer_only` checks that.

Layout: rank-4 activations are NCHW inside (ConvInteger and MaxPool exist only in NCHW, and the interface is
NCHW), so no Transpose surrounds the convolutions; TFLite's axis arguments (pads, reduction axes, concat axis)
are permuted instead, and a Transpose appears only where a reshape needs TFLite's order and data moves.
"""

from edgeq.targets.integer_onnx.model import integer_only_model
from edgeq.targets.integer_onnx.scan import scan_integer_only

__all__ = ["integer_only_model", "scan_integer_only"]
