"""The TFLite builtins edgeq writes, each stated once: how it is written, checked, run and accounted for.

A :class:`Builtin` is declared by the lowering module that emits it (edgeq.targets.tflite.lower.<family>), next
to the code that emits it, and registered with :func:`register`. Everything else reads it from here:

* the lowering: ``options`` (the schema's options table) and ``version`` (the minimum op version for the
  operator's signature, as tensorflow/lite/tools/versioning/op_version.cc picks it: TFLite selects a kernel by
  (op, version) and rejects versions above what it registers, so the minimum keeps models loadable by the oldest
  runtimes; docs/tflite-format.md);
* the validator (targets/tflite/validate.py): ``required_inputs``, ``parameter_input``, ``weight_axis``,
  ``bias_required``, ``same_encoding``, ``fixed_output``, ``output_shape`` and ``rules``; an opcode that is not
  registered is reported as unsupported;
* the TFLite Micro target: ``micro_resolver``, the MicroMutableOpResolver method that registers the kernel, and
  ``micro_types``, the tensor types its kernel takes (the target refuses a model with an op it has no kernel for);
* static analysis and the MCU latency estimate: ``kind`` and ``macs``.

``verified`` records, per activation dtype, what the lowering's output was checked against, so that a reader can
tell a bit-exact claim from a float one. The integer reference kernel of each opcode is edgeq/reference/<module>.py
(it declares ``OPCODES``); the executor finds it there, not here.

Registered builtins are loaded on first use (importing the lowering package registers them all): use
:func:`lookup`, :func:`find`, :func:`registered` or the read-only mapping :data:`BUILTINS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from edgeq.errors import EdgeqError, UnsupportedError
from edgeq.tflite_format.graph import Graph, Operator

KINDS = ("conv", "depthwise", "fully_connected", "pool", "elementwise", "data_movement")
OutputShape = tuple[int, ...] | str | None


def _no_macs(graph: Graph, op: Operator) -> int:
    return 0


def _unchecked_shape(graph: Graph, op: Operator) -> OutputShape:
    return None


def _no_rules(graph: Graph, op: Operator) -> list[str]:
    return []


@dataclass(frozen=True)
class Builtin:
    """What edgeq knows about one TFLite builtin operator as it writes and checks it."""

    opcode: str  # BuiltinOperator member, e.g. "CONV_2D"
    options: str | None  # BuiltinOptions member (the options table), e.g. "Conv2DOptions"; None: no table
    micro_resolver: str  # TFLite Micro's MicroMutableOpResolver method, e.g. "AddConv2D"
    kind: str  # one of KINDS: how static analysis and the MCU latency estimate see the operator
    version: Callable[[Graph, Operator], int]  # the minimum version of the operator's signature
    # verified[activation dtype] = what the lowering's output was verified against (a short statement)
    verified: Mapping[str, str] = field(default_factory=dict)
    # The output shape the operator computes (a tuple), why it cannot compute one (a string), or None.
    output_shape: Callable[[Graph, Operator], OutputShape] = _unchecked_shape
    macs: Callable[[Graph, Operator], int] = _no_macs
    required_inputs: int = 1  # inputs the operator cannot run without (the first ones)
    # the int32 shape/axes/paddings/permutation/size operand(s), not data (a tuple when there are several)
    parameter_input: int | tuple[int, ...] | None = None
    weight_axis: int | None = None  # set for ops with constant weights (input 1) and bias (input 2): the
    # quantized_dimension of per-channel weights (the output channel)
    bias_required: bool = False  # a quantized operator of this kind needs a bias input
    same_encoding: bool = False  # data inputs must carry the output's encoding (the kernel does not rescale)
    fixed_output: Mapping[np.dtype, tuple[float, int]] = field(default_factory=dict)  # dtype -> (scale, zp)
    rules: Callable[[Graph, Operator], list[str]] = _no_rules  # further checks, one message each
    # the activation types TFLite Micro has kernels for (EXP, LOG, SQRT: float32 only; GELU: none)
    micro_types: tuple[str, ...] = ("int8", "float32")

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.opcode}: kind {self.kind!r} is not one of {', '.join(KINDS)}")

    @property
    def parameters(self) -> tuple[int, ...]:
        """The positions of the parameter operands."""
        p = self.parameter_input
        return () if p is None else (p,) if isinstance(p, int) else tuple(p)

    def add_to(self, graph: Graph, inputs, outputs, options=None) -> Operator:
        """Append an operator of this builtin to GRAPH, with its options table and its minimum version."""
        op = Operator(self.opcode, list(inputs), list(outputs), dict(options or {}), options_type=self.options)
        op.version = self.version(graph, op)
        graph.add_operator(op)
        return op


_REGISTRY: dict[str, Builtin] = {}
_LOADED = False


def register(builtin: Builtin) -> Builtin:
    """Add BUILTIN to the registry (once per opcode); returns it, so a module can keep it by name."""
    known = _REGISTRY.get(builtin.opcode)
    if known is not None and known != builtin:
        raise EdgeqError(f"TFLite builtin {builtin.opcode} is declared twice")
    _REGISTRY[builtin.opcode] = builtin
    return builtin


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        importlib.import_module("edgeq.targets.tflite.lower")  # each lowering module registers its builtins


def find(opcode: str) -> Builtin | None:
    """The registered builtin OPCODE, or None."""
    _load()
    return _REGISTRY.get(opcode)


def lookup(opcode: str) -> Builtin:
    """The registered builtin OPCODE; UnsupportedError when edgeq does not write it."""
    builtin = find(opcode)
    if builtin is None:
        raise UnsupportedError(f"edgeq does not support the TFLite operator {opcode}")
    return builtin


def registered() -> list[Builtin]:
    """Every registered builtin, by opcode."""
    _load()
    return [_REGISTRY[opcode] for opcode in sorted(_REGISTRY)]


class _Builtins(Mapping):
    """Read-only opcode -> Builtin view of the registry (loaded on first use)."""

    def __getitem__(self, opcode: str) -> Builtin:
        _load()
        return _REGISTRY[opcode]

    def __iter__(self) -> Iterator[str]:
        return iter([b.opcode for b in registered()])

    def __len__(self) -> int:
        return len(registered())


BUILTINS: Mapping[str, Builtin] = _Builtins()


def op_version(graph: Graph, op: Operator) -> int:
    """The minimum version of OP's signature (its Builtin's ``version``)."""
    return lookup(op.opcode).version(graph, op)


# ----------------------------------------------------------------------------- facts several builtins share


def input_shape(graph: Graph, op: Operator) -> tuple[int, ...]:
    """The output shape of an operator that keeps its first input's shape."""
    return graph.tensors[op.inputs[0]].shape


def broadcast_shape(graph: Graph, op: Operator) -> OutputShape:
    """The output shape of a binary operator whose inputs broadcast like numpy."""
    x, other = (graph.tensors[op.inputs[i]] for i in (0, 1))
    try:
        return tuple(np.broadcast_shapes(x.shape, other.shape))
    except ValueError:
        return f"input shapes {x.shape} and {other.shape} do not broadcast"


def by_input_type(int8: int, int16: int | None = None, other: int = 1) -> Callable[[Graph, Operator], int]:
    """A version function for the common rule: INT8 for int8 inputs, INT16 for int16, OTHER for the rest."""

    def version(graph: Graph, op: Operator) -> int:
        dtype = graph.tensors[op.inputs[0]].dtype
        if dtype == np.int16 and int16 is not None:
            return int16
        return int8 if dtype == np.int8 else other

    return version


PROBABILITY_ENCODING = {  # a probability in [0, 1): the output encoding TFLite fixes for LOGISTIC and SOFTMAX
    np.dtype(np.int8): (1 / 256, -128),
    np.dtype(np.uint8): (1 / 256, 0),
    np.dtype(np.int16): (1 / 32768, 0),
}
TANH_ENCODING = {  # a value in [-1, 1): the output encoding TFLite fixes for TANH
    np.dtype(np.int8): (1 / 128, 0),
    np.dtype(np.uint8): (1 / 128, 128),
    np.dtype(np.int16): (1 / 32768, 0),
}

BIT_EXACT = "bit-exact with TFLite Micro and LiteRT BUILTIN_REF (reference kernel edgeq/reference/{})"
