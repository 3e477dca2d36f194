"""Which ops of a .tflite LiteRT's XNNPACK delegate took, read from the interpreter after delegation.

LiteRT replaces each run of ops XNNPACK accepts by one DELEGATE node, whose inputs are the tensors the run reads
from outside (activations and the ops' constants) and whose outputs are the tensors it writes for the outside; the
Python interpreter lists the original ops and then the DELEGATE nodes, but not which ops each one took. They follow
from the tensors: an op whose output a DELEGATE node writes ran inside it; an op whose output a DELEGATE node reads,
or that is a graph output no DELEGATE node writes, ran outside (in LiteRT's builtin kernels); an op whose output
neither side names is internal to a run: it ran wherever the op that reads it ran (the fixpoint below).

An op left to the builtin kernels costs its own (slower) kernel and a boundary between two delegated runs. What
ai-edge-litert 2.3.0's XNNPACK took and left, measured on edgeq's artifacts, is in docs/runtimes.md §3.4: MTCNN
ONet's five int8 PRELUs (and its int8 SOFTMAX) split it into six delegated runs and its int8 .tflite ran 0.33x as
fast as its float one, until the lowering wrote int8 PRelu as QUANTIZE, MUL and ADD (lower/prelu.py).
"""

from __future__ import annotations

from collections import Counter

DELEGATE = "DELEGATE"


def delegated_ops(interpreter) -> dict:
    """``{"ops": n, "delegated": k, "runs": DELEGATE nodes, "builtin": {opcode: count}}`` for an interpreter
    LiteRT has delegated (``litert_interpreter(..., kernels="default")``)."""
    details = interpreter._get_ops_details()  # the only way LiteRT's Python API lists the nodes after delegation
    ops = [d for d in details if d["op_name"] != DELEGATE]
    delegates = [d for d in details if d["op_name"] == DELEGATE]
    written = {int(t) for d in delegates for t in d["outputs"]}
    read = {int(t) for d in delegates for t in d["inputs"]}
    graph_outputs = {int(t) for t in interpreter._interpreter.OutputIndices()}
    consumers: dict[int, list[int]] = {}
    for number, op in enumerate(ops):
        for tensor in op["inputs"]:
            consumers.setdefault(int(tensor), []).append(number)
    inside: dict[int, bool] = {}
    for number, op in enumerate(ops):
        outputs = {int(t) for t in op["outputs"]}
        if outputs & written:
            inside[number] = True
        elif outputs & (read | graph_outputs):
            inside[number] = False
    changed = True
    while changed:  # an internal tensor's producer ran where its consumers ran
        changed = False
        for number, op in enumerate(ops):
            if number in inside:
                continue
            known = [inside[c] for t in op["outputs"] for c in consumers.get(int(t), []) if c in inside]
            if known:
                inside[number] = known[0]
                changed = True
    builtin = Counter(op["op_name"] for number, op in enumerate(ops) if not inside.get(number, False))
    return {
        "ops": len(ops),
        "delegated": len(ops) - sum(builtin.values()),
        "runs": len(delegates),
        "builtin": dict(sorted(builtin.items())),
    }


def delegation_line(delegation: dict) -> str:
    builtin = ", ".join(f"{op} x{count}" for op, count in delegation["builtin"].items())
    return (
        f"XNNPACK took {delegation['delegated']} of {delegation['ops']} ops in {delegation['runs']} run(s)"
        + (f"; left to LiteRT's builtin kernels: {builtin}" if builtin else "")
    )
