"""``edgeq.describe``: what a model file is and what edgeq would do with it, without data and without running it.

For an .onnx or a .tflite: its inputs and outputs (name, dtype, shape with symbolic dimensions, a guessed layout),
its opsets and producer (ONNX) or schema version and description (TFLite), an op histogram, the parameter count,
the MACs and the file size. For an .onnx also, per target, what ``convert`` would make of each node: quantized,
left float or refused, and why; each target answers from the rules it applies in a conversion
(``Target.node_plan``: edgeq.quantization.plan and placement for ONNX Runtime, the TFLite lowering's survey for
the TFLite targets), on the model preprocessed as convert preprocesses it (BatchNorm folded, constants folded), so
the nodes are those of the preprocessed graph. With ``exclude`` patterns (``--exclude``, as for quantize and
convert) each target plans as convert would with them; a node they match that a target keeps float is
"excluded" (a TFLite target may instead refuse it: a float node whose weights the lowering needs quantized).

Parameters are the elements of the constants the file stores except index tensors: ONNX, every initializer and
Constant value but the int64 ones (shapes, axes, indices); TFLite, every constant tensor but unquantized
int32/int64 ones (shapes, axes, paddings, permutations). MACs are the static analysis' (edgeq.measure.footprint:
convolutions, transposed convolutions, fully connected layers and matrix products, from the shapes), for one
sample when only the batch axis is symbolic, and unknown (None, with the reason) when a shape beyond the batch is.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper

from edgeq import targets
from edgeq.errors import EdgeqError, ExecutionError, ModelError, UnsupportedError
from edgeq.io.onnx_model import read_proto
from edgeq.passes.preprocess import preprocess
from edgeq.quantization.plan import Exclusions
from edgeq.quantization.recipe import Recipe
from edgeq.reports.profile import analyze
from edgeq.tflite_format.reader import read_file

OUTCOMES = ("quantized", "float", "excluded", "integer", "refused")
SMALL_CHANNELS = 4  # an image axis this short (gray, RGB, RGBA) is taken for the channel axis


def describe(
    model: str | os.PathLike, *, input_shapes: dict[str, list[int]] | None = None, exclude: list[str] = ()
) -> dict:
    """What MODEL (an .onnx or .tflite path) is, as a plain dict (the module docstring lists what); INPUT_SHAPES
    (input name -> shape, as ``--input-shape``) fixes dynamic input dimensions for the targets' node plans;
    EXCLUDE (node names, op types or regular expressions, as ``--exclude``) are the nodes shown "excluded"."""
    exclude = Recipe(exclude=list(exclude)).validate().exclude  # checked as a recipe's
    path = Path(model)
    claimers = targets.claiming(path)  # a missing file or an unknown kind: the usual error; a .tflite is checked
    if path.suffix == ".onnx":
        checked = read_proto(path)  # the safe loader's checks; its opset conversion is for the node plans only
        summary = _onnx_summary(path, onnx.load(path, load_external_data=False))
        summary.update(_node_plans(checked, input_shapes, exclude))
    elif path.suffix == ".tflite":
        summary = _tflite_summary(path)
    else:
        raise ModelError(f"{path}: edgeq inspect reads .onnx and .tflite files")
    summary["claimed_by"] = [target.name for target in claimers]
    summary.update(_macs(path, summary["inputs"]))
    return summary


def guess_layout(dtype: str, shape: list | None, name: str, default_image: str) -> str:
    """A guess at what an input or output holds, from its dtype, shape and name: token ids or an attention mask
    (int32/int64, rank 1-2), an image layout (rank 4: NCHW or NHWC by the axis of at most SMALL_CHANNELS; when
    that does not tell, DEFAULT_IMAGE, the format's own convention), features (N, C) (rank 2), or "unknown"."""
    if shape is None:
        return "unknown"
    small = [isinstance(d, int) and d <= SMALL_CHANNELS for d in shape]
    if dtype in ("int32", "int64"):  # indices, not quantized values (those are 8 or 16 bits)
        return ("attention mask" if "mask" in name.lower() else "token ids") if len(shape) in (1, 2) else "unknown"
    if len(shape) == 4:
        if small[1] != small[3]:
            return "NCHW" if small[1] else "NHWC"
        return default_image
    return "NC (features)" if len(shape) == 2 else "unknown"


def _dims(shape: onnx.TensorShapeProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def _onnx_dtype(elem_type: int) -> str:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _onnx_values(values, constants: set[str]) -> list[dict]:
    rows = []
    for value in values:
        if value.name in constants:  # old exporters list initializers among the inputs
            continue
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            rows.append({"name": value.name, "dtype": kind or "unknown", "shape": None, "layout": "unknown"})
            continue
        tensor = value.type.tensor_type
        dtype = _onnx_dtype(tensor.elem_type)
        shape = _dims(tensor.shape) if tensor.HasField("shape") else None
        rows.append(
            {"name": value.name, "dtype": dtype, "shape": shape, "layout": guess_layout(dtype, shape, value.name, "NCHW")}
        )
    return rows


def onnx_parameters(proto: onnx.ModelProto) -> tuple[int, int]:
    """(elements, bytes) of the initializers and Constant values of PROTO's graph, int64 ones excepted (from their
    dims: external data need not be loaded)."""
    tensors = [*proto.graph.initializer]
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors.append(node.attribute[0].t)
    kept = [t for t in tensors if t.data_type != onnx.TensorProto.INT64]
    sizes = [(int(np.prod(t.dims, dtype=np.int64)), t.data_type) for t in kept]
    return sum(n for n, _ in sizes), sum(n * helper.tensor_dtype_to_np_dtype(dtype).itemsize for n, dtype in sizes)


def _onnx_summary(path: Path, proto: onnx.ModelProto) -> dict:
    """The facts of the file as written (PROTO parsed without conversion)."""
    graph = proto.graph
    constants = {init.name for init in graph.initializer}
    params, param_bytes = onnx_parameters(proto)
    ops = Counter(f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type for node in graph.node)
    return {
        "path": str(path),
        "format": "onnx",
        "file_bytes": path.stat().st_size,
        "producer": {"name": proto.producer_name, "version": proto.producer_version},
        "ir_version": proto.ir_version,
        "opsets": {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import},
        "inputs": _onnx_values(graph.input, constants),
        "outputs": _onnx_values(graph.output, set()),
        "nodes": len(graph.node),
        "ops": dict(ops.most_common()),
        "params": params,
        "param_bytes": param_bytes,
    }


def _node_plans(proto: onnx.ModelProto, input_shapes, exclude: list[str]) -> dict:
    """Per target: its node plan of the preprocessed model (the nodes EXCLUDE matches "excluded"), the counts per
    outcome, and its refusal if any."""
    qdq = sum(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in proto.graph.node)
    if qdq:  # an artifact of edgeq or another quantizer: the plan would put pairs on pairs
        return _refused_everywhere(
            f"the model is already quantized ({qdq} QuantizeLinear/DequantizeLinear nodes): the targets take float "
            "models"
        )
    try:
        model = preprocess(ir.serde.deserialize_model(proto), input_shapes=input_shapes)
    except (ModelError, UnsupportedError, ExecutionError) as exc:  # convert would stop here for every target (a
        return _refused_everywhere(str(exc))  # bad --input-shape is the user's error: raised as it is)
    exclusions = Exclusions(exclude)
    plans: dict[str, dict] = {}
    shared: dict = {"exclusions": exclusions}  # the targets plan as convert with --exclude (Target.node_plan)
    excluded = {node.name for node in model.graph if exclusions.reason(node) == "excluded"}
    for target in targets.registered():
        try:
            plan = target.node_plan(model, shared)
        except EdgeqError as exc:
            plan = {"nodes": [], "refusal": str(exc)}
        if plan is not None:
            for row in plan["nodes"]:
                if row["node"] in excluded and row["outcome"] == "float":
                    row.update(outcome="excluded", reason="kept float on request (--exclude)")
            counts = Counter(row["outcome"] for row in plan["nodes"])
            plans[target.name] = {**plan, "counts": {k: counts[k] for k in OUTCOMES if counts[k]}}
    return {"preprocessed_nodes": len(model.graph), "targets": plans}


def _refused_everywhere(reason: str) -> dict:
    plans = {target.name: {"nodes": [], "counts": {}, "refusal": reason} for target in targets.registered()}
    return {"preprocessed_nodes": 0, "targets": plans}


def _tflite_summary(path: Path) -> dict:
    graph = read_file(path)

    def values(indices: list[int]) -> list[dict]:
        rows = []
        for index in indices:
            tensor = graph.tensors[index]
            signature = tensor.shape_signature or tensor.shape
            shape = [int(d) if d >= 0 else "?" for d in signature]
            dtype = np.dtype(tensor.dtype).name
            row = {"name": tensor.name, "dtype": dtype, "shape": shape}
            row["layout"] = guess_layout(dtype, shape, tensor.name, "NHWC")
            if tensor.quantization is not None and tensor.quantization.scale.size == 1:
                row["quantization"] = {
                    "scale": float(tensor.quantization.scale[0]),
                    "zero_point": int(tensor.quantization.zero_point[0]),
                }
            rows.append(row)
        return rows

    constants = [
        t.data
        for t in graph.tensors
        if t.is_constant and not (t.data.dtype in (np.int32, np.int64) and t.quantization is None)
    ]
    return {
        "path": str(path),
        "format": "tflite",
        "file_bytes": path.stat().st_size,
        "schema_version": int(graph.file_facts["version"]),
        "description": graph.description,
        "signature_keys": list(graph.file_facts["signature_keys"]),
        "inputs": values(graph.inputs),
        "outputs": values(graph.outputs),
        "nodes": len(graph.operators),
        "ops": dict(Counter(op.opcode for op in graph.operators).most_common()),
        "params": sum(int(a.size) for a in constants),
        "param_bytes": sum(int(a.nbytes) for a in constants),
    }


def _macs(path: Path, inputs: list[dict]) -> dict:
    """Total MACs and MACs per op type from the static analysis, or None and why they are unknown."""
    try:
        layers = analyze(path)["layers"]
    except EdgeqError as exc:
        return {"macs": None, "macs_by_op": {}, "macs_note": f"unknown: {exc}"}
    by_op: Counter = Counter()
    for layer in layers:
        by_op[layer["op"]] += layer["macs"]
    symbolic_batch = any(row["shape"] and not isinstance(row["shape"][0], int) for row in inputs)
    note = "per sample: the batch axis is symbolic (counted as 1)" if symbolic_batch else "for the shapes in the file"
    return {
        "macs": sum(by_op.values()),
        "macs_by_op": {op: macs for op, macs in by_op.most_common() if macs},
        "macs_note": note,
    }
