"""Run a TFLite graph with TFLite's reference integer kernels, in numpy: the oracle every target is checked against.

Each builtin has one kernel module in this package (one op per file, like TFLite Micro's reference kernels; a
module may serve closely related opcodes) that declares ``OPCODES``, the builtins it computes, and

    evaluate(graph: Graph, op: Operator, inputs: list[np.ndarray | None]) -> list[np.ndarray]

``inputs`` follows ``op.inputs`` (None for an absent optional input; constants are their stored arrays). Kernels read
shapes, quantization and options from ``graph.tensors`` and ``op.options``. Activations carry a leading batch axis
that may be larger than the graph's (the executor runs many samples at once): kernels never hard-code the batch.
:func:`kernel` finds a module by its ``OPCODES`` (the package is scanned once), so adding a kernel is adding a
module.

``semantics`` picks whose reference kernels to follow where they differ: "tflite-micro" (the default, and the
contract of every edgeq target) or "litert". A module whose kernel LiteRT's BUILTIN_REF computes differently
declares ``LITERT_VARIANT``, the keyword options of its ``evaluate`` that reproduce LiteRT (FULLY_CONNECTED rounds
once, LOGISTIC looks up a float table, HARD_SWISH and MUL compute a multiplier in float32; each differs from TFLite
Micro by one step on rare inputs; docs/runtimes.md). Everything else is the same in both.

A module whose float32 path computes what both runtimes' reference kernels compute, bit for bit, declares
``FLOAT32 = True`` (:func:`computes_float32`): the TFLite lowering runs only such operators in float islands.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from types import ModuleType

import numpy as np

import edgeq.reference
from edgeq.errors import DataError, EdgeqError, RecipeError, UnsupportedError
from edgeq.tflite_format.graph import Graph

SEMANTICS = ("tflite-micro", "litert")


@functools.cache
def kernel_modules() -> dict[str, ModuleType]:
    """Opcode -> the module of this package that declares it in ``OPCODES``."""
    modules: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(edgeq.reference.__path__):
        module = importlib.import_module(f"edgeq.reference.{info.name}")
        for opcode in getattr(module, "OPCODES", ()):
            if opcode in modules:
                raise EdgeqError(f"{opcode} has two reference kernels: {modules[opcode].__name__}, {module.__name__}")
            modules[opcode] = module
    return modules


def kernel(opcode: str, semantics: str = "tflite-micro"):
    module = kernel_modules().get(opcode)
    if module is None:
        raise UnsupportedError(f"the integer reference has no kernel for {opcode}")
    litert_variant = getattr(module, "LITERT_VARIANT", None)
    if semantics == "litert" and litert_variant is not None:
        return functools.partial(module.evaluate, **litert_variant)
    return module.evaluate


def computes_float32(opcode: str) -> bool:
    """Whether OPCODE's reference kernel computes float32 tensors bit for bit as LiteRT and TFLite Micro do."""
    module = kernel_modules().get(opcode)
    return module is not None and getattr(module, "FLOAT32", False)


def _feeds(graph: Graph, inputs: list[np.ndarray]) -> dict[int, np.ndarray]:
    if len(inputs) != len(graph.inputs):
        raise DataError(f"the model has {len(graph.inputs)} inputs, got {len(inputs)}")
    values: dict[int, np.ndarray] = {}
    for index, array in zip(graph.inputs, inputs, strict=True):
        tensor = graph.tensors[index]
        array = np.asarray(array)
        if array.dtype != tensor.dtype or array.shape[1:] != tensor.shape[1:]:
            raise DataError(
                f"input {tensor.name} wants {tensor.dtype} [N, {', '.join(map(str, tensor.shape[1:]))}], "
                f"got {array.dtype} {list(array.shape)}"
            )
        values[index] = array
    return values


def _execute(graph: Graph, values: dict[int, np.ndarray], first_op: int, semantics: str) -> None:
    """Run operators FIRST_OP.. in order, adding their outputs to VALUES."""
    for op in graph.operators[first_op:]:
        args = [None if i < 0 else values[i] if i in values else graph.tensors[i].data for i in op.inputs]
        try:
            results = kernel(op.opcode, semantics)(graph, op, args)
        except UnsupportedError as refusal:  # a kernel refuses a signature: name the operator it met it in
            where = graph.tensors[op.outputs[0]].name
            raise UnsupportedError(
                f"{refusal} (operator {op.opcode} writing {where})", op=op.opcode, node=where, code=refusal.code
            ) from None
        for index, result in zip(op.outputs, results, strict=True):
            expected = graph.tensors[index].dtype
            if result.dtype != expected:
                raise AssertionError(f"{op.opcode} kernel returned {result.dtype} for a {expected} tensor")
            values[index] = result


def run(
    graph: Graph, inputs: list[np.ndarray], *, keep: bool = False, semantics: str = "tflite-micro"
) -> list[np.ndarray] | dict[int, np.ndarray]:
    """Outputs of GRAPH for INPUTS (one array per graph input, any batch size); with KEEP every tensor by index."""
    if semantics not in SEMANTICS:
        raise RecipeError(f"semantics must be one of {', '.join(SEMANTICS)}")
    values = _feeds(graph, inputs)
    _execute(graph, values, 0, semantics)
    if keep:
        return values
    return [values[i] for i in graph.outputs]


def run_all_semantics(graph: Graph, inputs: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Outputs under every semantics; the ops before the first one whose kernels differ run once."""
    values = _feeds(graph, inputs)
    _execute(graph, values, 0, SEMANTICS[0])
    outputs = {SEMANTICS[0]: [values[i] for i in graph.outputs]}
    for semantics in SEMANTICS[1:]:
        first = next(
            (
                n
                for n, op in enumerate(graph.operators)
                if kernel(op.opcode, semantics) != kernel(op.opcode, SEMANTICS[0])
            ),
            len(graph.operators),
        )
        produced_later = {t for op in graph.operators[first:] for t in op.outputs}
        shared = {i: v for i, v in values.items() if i not in produced_later}
        _execute(graph, shared, first, semantics)
        outputs[semantics] = [shared[i] for i in graph.outputs]
    return outputs
