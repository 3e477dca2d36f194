"""Load and save ONNX models as onnx_ir models, safely.

Loading never reads outside the model's folder: every external-data location must resolve (after
following symlinks) to a file inside the folder that holds the .onnx file. Every opset from 7 to the newest the
onnxruntime 1.32 implements QuantizeLinear/DequantizeLinear for (25) is accepted: models below opset 13 are
converted up with onnx's version converter (per-channel QuantizeLinear needs opset 13), newer ones are planned in
their own opset (the Q/DQ pairs edgeq inserts mean the same in every opset from 13 on; onnx converts few ops down).
Saving writes the whole model into one file atomically, with the lowest IR version that its opsets
need, so the installed onnxruntime (which lags onnx by an IR version or two) can read it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import onnx
import onnx.external_data_helper
import onnx.helper
import onnx.version_converter
import onnx_ir as ir
from google.protobuf.message import DecodeError

from edgeq.errors import ModelError, UnsupportedError
from edgeq.io.files import check_output_path, write_bytes_atomic
from edgeq.io.model_checks import check_contents, check_declared_types, check_interface, replace_nonfinite

MIN_OPSET = 7
MAX_OPSET = 25
QDQ_MIN_OPSET = 13
_PROTOBUF_LIMIT = 2**31 - 1


def _external_tensors(proto: onnx.ModelProto):
    """Every TensorProto in the model that stores its data outside the file."""
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor


def _check_external_data(proto: onnx.ModelProto, path: Path) -> None:
    root = path.parent.resolve()
    for tensor in _external_tensors(proto):
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if not location or os.path.isabs(location):
            raise ModelError(f"{path}: tensor {tensor.name!r}: external data location {location!r} is not relative")
        target = (root / location).resolve()
        if root not in target.parents:
            raise ModelError(
                f"{path}: tensor {tensor.name!r}: external data {location!r} points outside the model folder"
            )
        if not target.is_file():
            raise ModelError(f"{path}: tensor {tensor.name!r}: external data file {location!r} is missing")
        try:
            needed = int(info.get("offset", 0)) + int(info.get("length", 0))
        except ValueError:
            raise ModelError(f"{path}: tensor {tensor.name!r}: external data offset or length is not a number") from None
        if needed > target.stat().st_size:
            raise ModelError(f"{path}: tensor {tensor.name!r}: external data file {location!r} is truncated")


def default_opset(proto: onnx.ModelProto, path: Path) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ModelError(f"{path}: imports no default-domain (ai.onnx) opset")


def _inside_a_function(message: str, opset: int) -> bool:
    """Whether strict shape inference failed in the function body of an op ONNX defines as a function (onnx 1.23
    fails on MeanVarianceNormalization's, which onnxruntime runs): onnx's limitation, not the model's."""
    for op_type in re.findall(r"\(op_type:(\w+)", message):
        try:
            if onnx.defs.get_schema(op_type, opset).has_function:
                return True
        except onnx.defs.SchemaError:
            continue
    return False


def _check_model(proto: onnx.ModelProto, path: Path) -> None:
    """onnx's checker without strict shape inference."""
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ModelError(f"{path} is not a valid ONNX model: {' '.join(str(exc).split())}") from None


def read_proto(path: str | os.PathLike, *, replaced: list[dict] | None = None) -> onnx.ModelProto:
    """Parse, check and complete (external data, opset) an ONNX file given by the user. With REPLACED (a list),
    NaN and infinite weights are replaced instead of refused (model_checks.replace_nonfinite), one record per
    tensor appended to it."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelError(f"model path {path} is not a file")
    data = path.read_bytes()
    if not data:
        raise ModelError(f"model file {path} is empty")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ModelError(f"{path} is not an ONNX model (or is truncated)") from None
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelError(f"{path} is not an ONNX model (no graph or opset)")
    _check_external_data(proto, path)
    onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))

    opset = default_opset(proto, path)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelError(f"{path}: opset {opset} is not supported (edgeq supports {MIN_OPSET}..{MAX_OPSET})")
    check_interface(proto, path)
    check_declared_types(proto, path)
    try:  # full_check: strict shape and type inference too (an int32 Conv weight, a Gemm weight of the wrong size)
        onnx.checker.check_model(proto, full_check=True)
    except UnicodeDecodeError:  # the checker quotes a name whose bytes are not UTF-8
        raise ModelError(f"{path} is not a valid ONNX model: a name or string in it is not UTF-8") from None
    except onnx.shape_inference.InferenceError as exc:
        if not _inside_a_function(str(exc), opset):
            raise ModelError(f"{path} is not a valid ONNX model: {' '.join(str(exc).split())}") from None
        _check_model(proto, path)
    except (onnx.checker.ValidationError, ValueError) as exc:  # ValueError: an unknown tensor data type
        problem = " ".join(str(exc).split()) or "invalid model"  # onnx's messages span lines
        raise ModelError(f"{path} is not a valid ONNX model: {problem}") from None
    if replaced is not None:
        replaced += replace_nonfinite(proto)
    check_contents(proto, path)
    if opset < QDQ_MIN_OPSET:
        try:
            proto = onnx.version_converter.convert_version(proto, QDQ_MIN_OPSET)
        except Exception as exc:  # the converter raises bare RuntimeErrors for unconvertible ops
            raise ModelError(f"{path}: cannot convert opset {opset} to {QDQ_MIN_OPSET}: {exc}") from None
    return proto


def load_model(path: str | os.PathLike, *, replaced: list[dict] | None = None) -> ir.Model:
    """Load a user's ONNX file as an onnx_ir model (all data in memory); REPLACED as for read_proto."""
    return ir.serde.deserialize_model(read_proto(path, replaced=replaced))


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """Serialize with the lowest IR version the model's opsets need (onnxruntime reads older IRs)."""
    proto = ir.serde.serialize_model(model)
    opsets = [onnx.helper.make_opsetid(e.domain, e.version) for e in proto.opset_import]
    proto.ir_version = max(10, onnx.helper.find_min_ir_version_for(opsets, ignore_unknown=True))
    return proto


def float_tensor_names(proto: onnx.ModelProto) -> list[str]:
    """Node outputs of PROTO typed float (in its value_info or outputs), in graph order."""
    typed = {v.name: v.type.tensor_type.elem_type for v in [*proto.graph.value_info, *proto.graph.output]}
    return [out for node in proto.graph.node for out in node.output if typed.get(out) == onnx.TensorProto.FLOAT]


def clone_model(model: ir.Model) -> ir.Model:
    """An independent copy of MODEL (passes that measure variants of a model change their copy in place)."""
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def model_bytes(model: ir.Model) -> bytes:
    proto = to_proto(model)
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise UnsupportedError("model is larger than 2 GB; edgeq writes single-file models only")
    return proto.SerializeToString()


def save_model(model: ir.Model, path: str | os.PathLike, *inputs: str | os.PathLike | None) -> Path:
    """Write MODEL to PATH atomically; PATH must not be any of INPUTS."""
    out = check_output_path(path, *inputs)
    write_bytes_atomic(out, model_bytes(model))
    return out
