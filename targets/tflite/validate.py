"""The validator edgeq runs on every .tflite it emits: the file rules of docs/tflite-format.md, checked rather
than trusted.

TFLite Micro checks almost none of them and silently computes garbage when one is broken (weights without data,
a weight zero point of 3, a wrong depth_multiplier, operators out of order, a wrong output shape); LiteRT rejects
some, ignores others and aborts the process on a few. The generic rules:

File       ``TFL3`` identifier; Model.version 3; buffer 0 empty; every constant in its own non-empty buffer of
           prod(shape) * itemsize bytes starting on a 16-byte boundary; every opcode with
           deprecated_builtin_code = min(code, 127) and builtin_code = code.
Graph      operators in topological order: each input is a graph input, a constant or an earlier operator's
           output; each graph output is produced; graph inputs, graph outputs and operator outputs hold no data.
Tensors    int8/uint8/int16 tensors and biases are quantized (an unquantized int32 is integer data: ids,
           indices, axes, shapes); the scale and zero-point vectors have the same length; scales are positive
           and finite; zero points lie in the dtype's range (and are 0 for int16); a per-channel tensor has one
           scale per slice along quantized_dimension.
Weights    constant weights with zero point 0, per channel along the output channel; a bias that is constant,
           int32 (int64 for int16 activations), zero point 0, scale[c] = float32(S_in * S_w[c]) to 1e-6.

Every per-operator fact comes from the operator's registered Builtin (edgeq.targets.tflite.builtins): an opcode
edgeq does not register is unsupported; the rest are checked for their required inputs, options table, weight
axis and bias (``weight_axis``, ``bias_required``), shared encoding (``same_encoding``: the kernel copies,
interpolates or compares stored values), fixed output encoding (``fixed_output``), output shape
(``output_shape``), further rules (``rules``, e.g. DEPTHWISE's depth_multiplier) and minimum version
(``version``).
"""

from __future__ import annotations

import numpy as np
import tflite

from edgeq.errors import ModelError
from edgeq.targets.tflite.builtins import Builtin, find
from edgeq.tflite_format.graph import DTYPES, OPCODE_NAMES, Graph, Operator, Tensor
from edgeq.tflite_format.reader import raw_builtin_code, read

ALIGNMENT = 16  # what the converter and tflite_flatbuffer_align produce; MCUs and DMA rely on it
SCHEMA_VERSION = 3
QUANTIZEDDTYPES = {np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)}
BIAS_SCALE_RTOL = 1e-6


def check_model(model_bytes: bytes) -> None:
    """Raise EdgeqError naming the first violation (and how many more) unless MODEL_BYTES is sound."""
    violations = validate_model(model_bytes)
    if violations:
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise ModelError(f"invalid TFLite model: {violations[0]}{more}")


def validate_model(model_bytes: bytes) -> list[str]:
    """Every rule MODEL_BYTES breaks, one line each; [] when the model is sound."""
    try:
        layout = _layout_violations(model_bytes)
    except Exception as exc:  # a malformed flatbuffer raises assorted errors
        return [f"not a TFLite flatbuffer ({type(exc).__name__}: {exc})"]
    try:
        graph = read(model_bytes, runnable=False)
    except Exception as exc:  # read() cannot build a graph from data of the wrong size, which layout names
        return layout or [f"edgeq cannot read the model: {exc}"]
    violations = layout + _file_violations(graph)
    structure, well_formed = _structure_violations(graph)
    violations += structure
    seen: set[int] = set()
    for index, op in enumerate(graph.operators):
        if not well_formed[index]:
            continue
        prefix = f"op {index} {op.opcode}: "
        builtin = find(op.opcode)
        for role, tensor_index in _operands(op, builtin):
            if tensor_index not in seen:
                seen.add(tensor_index)
                tensor = graph.tensors[tensor_index]
                parameter = role == "parameter"
                violations += [
                    f"{prefix}{role} tensor '{tensor.name}' {v}" for v in _encoding(tensor, parameter)
                ]
        violations += [prefix + v for v in _operator_violations(graph, op, builtin)]
    for tensor_index, tensor in enumerate(graph.tensors):
        if tensor_index not in seen:
            violations += [f"tensor '{tensor.name}' {v}" for v in _encoding(tensor, parameter=False)]
    return violations


# --------------------------------------------------------------------------------------------------- file


def _layout_violations(model_bytes: bytes) -> list[str]:
    """Rules on the raw flatbuffer that read() normalizes away or cannot represent: data of the wrong size
    (read() cannot reshape it), a single zero point for many scales (read() expands it) and the two opcode
    fields (read() decodes them into a name)."""
    model = tflite.Model.GetRootAs(model_bytes, 0)
    buffer_sizes = [model.Buffers(i).DataLength() for i in range(model.BuffersLength())]
    violations = []
    if not buffer_sizes:
        violations.append("the model has no buffers (buffer 0 must be the empty sentinel)")
    elif buffer_sizes[0]:
        violations.append(
            f"buffer 0 holds {buffer_sizes[0]} bytes (must be empty: TFLite Micro corrupts memory otherwise)"
        )
    for index in range(model.OperatorCodesLength()):
        operator_code = model.OperatorCodes(index)
        deprecated, builtin = operator_code.DeprecatedBuiltinCode(), raw_builtin_code(operator_code)
        code = max(deprecated, builtin)  # what TFLite decodes
        if deprecated != min(code, 127) or builtin != code:
            violations.append(
                f"operator code {index} ({OPCODE_NAMES.get(code, code)}): deprecated_builtin_code {deprecated} "
                f"and builtin_code {builtin}, must be {min(code, 127)} and {code}"
            )
    if not model.SubgraphsLength():
        return [*violations, "the model has no subgraph"]
    subgraph = model.Subgraphs(0)
    for i in range(subgraph.TensorsLength()):
        fb_tensor = subgraph.Tensors(i)
        name = (fb_tensor.Name() or b"").decode(errors="replace")
        buffer = fb_tensor.Buffer()
        if buffer >= len(buffer_sizes):
            violations.append(f"tensor '{name}' refers to buffer {buffer}; the model has {len(buffer_sizes)}")
            continue
        dtype = DTYPES.get(fb_tensor.Type())
        shape = tuple(int(d) for d in fb_tensor.ShapeAsNumpy()) if fb_tensor.ShapeLength() else ()
        if buffer and buffer_sizes[buffer] and dtype is not None:
            needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if buffer_sizes[buffer] != needed:
                violations.append(
                    f"constant tensor '{name}' has {buffer_sizes[buffer]} bytes of data; "
                    f"its shape {shape} of {dtype} needs {needed}"
                )
        quantization = fb_tensor.Quantization()
        if quantization is not None and quantization.ScaleLength():
            scales, zero_points = quantization.ScaleLength(), quantization.ZeroPointLength()
            if scales != zero_points:
                violations.append(
                    f"tensor '{name}' has {scales} scales and {zero_points} zero points (must be as many)"
                )
    return violations


def _file_violations(graph: Graph) -> list[str]:
    facts = graph.file_facts
    violations = []
    if facts["identifier"] != b"TFL3":
        violations.append(f"file identifier {facts['identifier']!r}, must be b'TFL3'")
    if facts["version"] != SCHEMA_VERSION:
        violations.append(f"Model.version {facts['version']}, must be {SCHEMA_VERSION}")
    owner: dict[int, str] = {}
    for tensor, buffer in zip(graph.tensors, facts["buffer_of_tensor"], strict=True):
        if not tensor.is_constant:
            continue
        if buffer == 0:
            violations.append(f"constant tensor '{tensor.name}' keeps its data in buffer 0")
        elif buffer in owner:
            violations.append(
                f"constant tensors '{owner[buffer]}' and '{tensor.name}' share buffer {buffer} "
                "(each constant needs its own)"
            )
        else:
            owner[buffer] = tensor.name
            offset = facts["buffer_offsets"][buffer]
            if offset % ALIGNMENT:
                violations.append(
                    f"constant tensor '{tensor.name}': data at file offset {offset} is not {ALIGNMENT}-byte aligned"
                )
    return violations


# --------------------------------------------------------------------------------------------------- graph


def _structure_violations(graph: Graph) -> tuple[list[str], list[bool]]:
    """Tensor references, topological order and graph inputs/outputs; also which operators are well formed
    enough (indices in range, required inputs present, a supported op) for the per-operator rules."""
    tensors = graph.tensors
    violations = []
    for kind, indices in (("input", graph.inputs), ("output", graph.outputs)):
        for t in indices:
            if not 0 <= t < len(tensors):
                violations.append(f"graph {kind} index {t} is out of range ({len(tensors)} tensors)")
            elif tensors[t].is_constant:
                violations.append(f"graph {kind} '{tensors[t].name}' has constant data")
    available = {t for t in graph.inputs if 0 <= t < len(tensors)}
    available |= {i for i, t in enumerate(tensors) if t.is_constant}
    producers = graph.producers()
    writer: dict[int, int] = {}
    well_formed = []
    for index, op in enumerate(graph.operators):
        prefix = f"op {index} {op.opcode}: "
        bad = [t for t in op.inputs if not -1 <= t < len(tensors)] + [
            t for t in op.outputs if not 0 <= t < len(tensors)
        ]
        if bad:
            violations.append(f"{prefix}tensor index {bad[0]} is out of range ({len(tensors)} tensors)")
            well_formed.append(False)
            continue
        for t in op.inputs:
            if t < 0 or t in available:
                continue
            if t in producers:
                violations.append(
                    f"{prefix}input tensor '{tensors[t].name}' is produced by op {producers[t]}, which does not "
                    "come earlier (operators must be in topological order)"
                )
            else:
                violations.append(
                    f"{prefix}input tensor '{tensors[t].name}' is neither a graph input, a constant nor "
                    "produced by an operator"
                )
        for t in op.outputs:
            if tensors[t].is_constant:
                violations.append(f"{prefix}output tensor '{tensors[t].name}' has constant data")
            elif t in graph.inputs:
                violations.append(f"{prefix}output tensor '{tensors[t].name}' is a graph input")
            elif t in writer:
                violations.append(
                    f"{prefix}output tensor '{tensors[t].name}' is also written by op {writer[t]}"
                )
            writer[t] = index
        available.update(op.outputs)
        builtin = find(op.opcode)
        supported = builtin is not None
        needed = builtin.required_inputs if supported else 1
        complete = len(op.inputs) >= needed and min(op.inputs[:needed]) >= 0 and bool(op.outputs)
        if not supported:
            violations.append(f"{prefix}edgeq does not support this operator")
        elif not complete:
            violations.append(f"{prefix}needs {needed} inputs and an output, has {op.inputs} -> {op.outputs}")
        well_formed.append(supported and complete)
    for t in graph.outputs:
        if 0 <= t < len(tensors) and t not in available:
            violations.append(f"graph output '{tensors[t].name}' is not produced by any operator")
    return violations, well_formed


def _operands(op: Operator, builtin: Builtin) -> list[tuple[str, int]]:
    """(role, tensor index) of every present operand, the role as messages name it."""
    roles = []
    for position, t in enumerate(op.inputs):
        if t < 0:
            continue
        if builtin.weight_axis is not None and position in (1, 2):
            roles.append(("weight" if position == 1 else "bias", t))
        elif position in builtin.parameters:
            roles.append(("parameter", t))
        else:
            roles.append(("input", t))
    return roles + [("output", t) for t in op.outputs]


def _encoding(tensor: Tensor, parameter: bool) -> list[str]:
    """What is wrong with TENSOR's quantization parameters (the message tails)."""
    q = tensor.quantization
    if q is None:
        needed = tensor.dtype in QUANTIZEDDTYPES and not parameter
        return [f"({tensor.dtype}) has no quantization parameters"] if needed else []
    violations = []
    bad_scales = q.scale[~(np.isfinite(q.scale) & (q.scale > 0))]
    if bad_scales.size:
        violations.append(f"has scale {bad_scales[0]} (scales must be positive and finite)")
    if tensor.dtype.kind in "iu":
        info = np.iinfo(tensor.dtype)
        outside = q.zero_point[(q.zero_point < info.min) | (q.zero_point > info.max)]
        if outside.size:
            violations.append(f"has zero point {outside[0]}, outside {tensor.dtype} [{info.min}, {info.max}]")
        elif tensor.dtype == np.int16 and np.any(q.zero_point != 0):
            violations.append(
                f"has zero point {q.zero_point[q.zero_point != 0][0]} (int16 is symmetric: must be 0)"
            )
    if q.per_channel:
        if not 0 <= q.axis < len(tensor.shape):
            violations.append(f"has quantized_dimension {q.axis}, not a dimension of shape {tensor.shape}")
        elif q.scale.size != tensor.shape[q.axis]:
            violations.append(
                f"has {q.scale.size} scales for dimension {q.axis} of size {tensor.shape[q.axis]} "
                "(per-channel needs one per channel)"
            )
    return violations


# --------------------------------------------------------------------------------------------------- operators


def _operator_violations(graph: Graph, op: Operator, builtin: Builtin) -> list[str]:
    violations = []
    if op.options_type is not None and op.options_type != builtin.options:
        violations.append(f"options table {op.options_type}, must be {builtin.options or 'none'}")
    if builtin.weight_axis is not None:
        violations += _weight_violations(graph, op, builtin)
    violations += builtin.rules(graph, op)
    if builtin.same_encoding:
        violations += _same_encoding_violations(graph, op, builtin)
    if builtin.fixed_output:
        violations += _fixed_output_violations(graph, op, builtin)
    shape = _shape_violations(graph, op, builtin)
    violations += shape
    if not shape:  # the version functions read the operand shapes
        minimum = builtin.version(graph, op)
        if op.version != minimum:
            violations.append(f"version {op.version}, must be {minimum} (the minimum for its signature)")
    return violations


def _weight_violations(graph: Graph, op: Operator, builtin: Builtin) -> list[str]:
    """Constant weights (input 1) and bias (input 2) of an operator with a weight axis."""
    x, weights = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    bias = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    axis = builtin.weight_axis
    violations = []
    if not weights.is_constant:
        violations.append(f"weight tensor '{weights.name}' has no data")
    if bias is not None and not bias.is_constant:
        violations.append(f"bias tensor '{bias.name}' has no data")
    if x.dtype not in (np.int8, np.int16):
        return violations  # a float operator: no quantization rules
    if weights.dtype != np.int8:
        violations.append(f"weight tensor '{weights.name}' is {weights.dtype}, must be int8")
    w_q = weights.quantization
    if w_q is not None:
        if np.any(w_q.zero_point != 0):
            zero_point = w_q.zero_point[w_q.zero_point != 0][0]
            violations.append(f"weight tensor '{weights.name}' has zero point {zero_point} (must be 0)")
        if w_q.per_channel and w_q.axis != axis:
            violations.append(
                f"weight tensor '{weights.name}' has quantized_dimension {w_q.axis} (must be {axis})"
            )
    if bias is None:
        if builtin.bias_required:
            violations.append("has no bias (TFLite requires one for a quantized convolution; write zeros)")
        return violations
    bias_dtype = np.dtype(np.int32 if x.dtype == np.int8 else np.int64)
    if bias.dtype != bias_dtype:
        violations.append(f"bias tensor '{bias.name}' is {bias.dtype}, must be {bias_dtype}")
    if len(weights.shape) > axis and bias.shape != (weights.shape[axis],):
        violations.append(
            f"bias tensor '{bias.name}' has shape {bias.shape}, must be ({weights.shape[axis]},) "
            "(one value per output channel)"
        )
    b_q = bias.quantization
    if b_q is None:
        violations.append(f"bias tensor '{bias.name}' ({bias.dtype}) has no quantization parameters")
    if b_q is None or w_q is None or x.quantization is None:
        return violations  # the missing parameters are reported with the tensor
    if np.any(b_q.zero_point != 0):
        zero_point = b_q.zero_point[b_q.zero_point != 0][0]
        violations.append(f"bias tensor '{bias.name}' has zero point {zero_point} (must be 0)")
    expected = (np.float64(x.quantization.scale[0]) * w_q.scale.astype(np.float64)).astype(np.float32)
    if b_q.scale.size != expected.size:
        violations.append(
            f"bias tensor '{bias.name}' has {b_q.scale.size} scales, the weights {expected.size} "
            "(bias scale[c] must be S_in * S_w[c])"
        )
    else:
        wrong = np.flatnonzero(np.abs(b_q.scale - expected) > BIAS_SCALE_RTOL * expected)
        if wrong.size:
            c = wrong[0]
            violations.append(
                f"bias tensor '{bias.name}' has scale[{c}] = {b_q.scale[c]:.9g}, must be "
                f"float32(S_in * S_w[{c}]) = {expected[c]:.9g}"
            )
    return violations


def _describe(tensor: Tensor) -> str:
    q = tensor.quantization
    if q is None:
        return "not quantized"
    if q.per_channel:
        return f"per-channel along dimension {q.axis}"
    return f"(scale {q.scale[0]:.9g}, zero point {q.zero_point[0]})"


def _same_encoding_violations(graph: Graph, op: Operator, builtin: Builtin) -> list[str]:
    output = graph.tensors[op.outputs[0]]
    violations = []
    for position, t in enumerate(op.inputs):
        if t < 0 or position in builtin.parameters:
            continue
        tensor = graph.tensors[t]
        a, b = tensor.quantization, output.quantization
        same = (a is None and b is None) or (
            a is not None
            and b is not None
            and np.array_equal(a.scale, b.scale)
            and np.array_equal(a.zero_point, b.zero_point)
        )
        if not same:
            violations.append(
                f"input tensor '{tensor.name}' is {_describe(tensor)} but output tensor '{output.name}' is "
                f"{_describe(output)} (must be identical: {op.opcode} does not rescale)"
            )
    return violations


def _fixed_output_violations(graph: Graph, op: Operator, builtin: Builtin) -> list[str]:
    output = graph.tensors[op.outputs[0]]
    expected = builtin.fixed_output.get(output.dtype)
    q = output.quantization
    if expected is None or q is None:
        return []
    scale, zero_point = expected
    if q.scale.size != 1 or q.scale[0] != np.float32(scale) or q.zero_point[0] != zero_point:
        return [
            f"output tensor '{output.name}' is {_describe(output)}, must be (scale 1/{round(1 / scale)}, "
            f"zero point {zero_point}) for {output.dtype}"
        ]
    return []


# --------------------------------------------------------------------------------------------------- shapes


def _shape_violations(graph: Graph, op: Operator, builtin: Builtin) -> list[str]:
    output = graph.tensors[op.outputs[0]]
    expected = builtin.output_shape(graph, op)
    if isinstance(expected, str):
        return [expected]
    if expected is not None and output.shape != expected:
        return [f"output tensor '{output.name}' has shape {output.shape}, the operator computes {expected}"]
    return []
