"""What onnxruntime fuses: it rewrites ``DQ -> Conv -> Q`` units into integer kernels (QLinearConv and friends)
only when it can; on x86 that depends on the activation type. ``fusion_report`` loads the model with every graph
optimization, saves the optimized graph (``SessionOptions.optimized_model_filepath``) and counts which
convolutions and other compute ops became integer kernels and which still run in float, and which ops sit in a
``DequantizeLinear -> op -> QuantizeLinear`` sandwich: run in float between a dequantize and a quantize that an
integer kernel (or keeping the tensor float) would spare.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from edgeq.io.session import session

CONV_OPS = {"Conv", "ConvTranspose", "FusedConv"}
INTEGER_CONV_OPS = {"QLinearConv", "NhwcQLinearConv", "ConvInteger"}
FLOAT_COMPUTE_OPS = CONV_OPS | {
    "Gemm",
    "MatMul",
    "FusedMatMul",
    "FusedGemm",
    "Add",
    "Mul",
    "AveragePool",
    "GlobalAveragePool",
    "Softmax",
    "Sigmoid",
    "Concat",
}


@dataclass
class FusionReport:
    convs_total: int
    convs_fused: int
    op_counts: dict[str, int]
    quantized_kernels: dict[str, int]
    float_compute: list[str] = field(default_factory=list)  # node names of compute ops left in float
    sandwiches: dict[str, int] = field(default_factory=dict)  # op type -> nodes run in float between DQ and Q

    def to_dict(self) -> dict:
        return asdict(self)


def fusion_report(model_path: str | Path, *, threads: int = 1) -> FusionReport:
    """What onnxruntime's optimizer turned into integer kernels, from the optimized graph it saves."""
    model_path = Path(model_path)
    source = onnx.load(model_path)
    convs_total = sum(1 for n in source.graph.node if n.op_type in CONV_OPS)
    with tempfile.TemporaryDirectory() as tmp:
        optimized_path = Path(tmp) / "optimized.onnx"
        session(model_path, threads=threads, optimized_model_path=optimized_path)
        optimized = onnx.load(optimized_path)
    op_counts = Counter(n.op_type for n in optimized.graph.node)
    quantized = {op: c for op, c in op_counts.items() if is_integer_kernel(op)}
    float_compute = [n.name for n in optimized.graph.node if n.op_type in FLOAT_COMPUTE_OPS]
    convs_fused = sum(c for op, c in op_counts.items() if op in INTEGER_CONV_OPS)
    return FusionReport(convs_total, convs_fused, dict(op_counts), quantized, float_compute, _sandwiches(optimized))


def sandwiches_text(sandwiches: dict[str, int]) -> str:
    """'Pad x11, PRelu x2': the op types a fusion report found in float between DQ and Q, with their counts."""
    return ", ".join(f"{op} x{count}" for op, count in sandwiches.items())


def _sandwiches(model: onnx.ModelProto) -> dict[str, int]:
    """Op types of the nodes that read a DequantizeLinear output and whose output only QuantizeLinear reads."""
    producers = {name: node for node in model.graph.node for name in node.output}
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    found: Counter = Counter()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or not node.output:
            continue
        reads_dq = any(producers[n].op_type == "DequantizeLinear" for n in node.input if n in producers)
        readers = consumers.get(node.output[0], [])
        if reads_dq and readers and all(op == "QuantizeLinear" for op in readers):
            found[node.op_type] += 1
    return dict(sorted(found.items()))


def is_integer_kernel(op_type: str) -> bool:
    """ORT's integer kernels: the QLinear family (NCHW and NHWC), QGemm and the integer-accumulating ops."""
    return op_type.startswith(("QLinear", "NhwcQLinear")) or op_type in (
        "QGemm",
        "ConvInteger",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
    )
