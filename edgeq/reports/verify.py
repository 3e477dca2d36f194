"""``edgeq verify``: one integer semantics across every target, checked by running them all on the same inputs.

The oracle is edgeq's integer reference (edgeq.reference, TFLite Micro's reference kernels in numpy) run on one
TFLite graph: the graph an artifact stores (a .tflite), or else the one a QDQ .onnx lowers to (``integer_graph``
of the claiming target, edgeq.targets). Every runtime gets the same int8 inputs: the data quantized the way
TFLite's QUANTIZE does (edgeq.reference.interface); ONNX models, whose interface is float, get those integers
dequantized, which their QuantizeLinear maps back exactly, and their float outputs are turned back into integers
with the output's encoding.

Each target claiming an artifact says what its runtimes computed (``integer_runs``), and how they are held:

* exact (0 mismatching elements): the integer-only ONNX model in onnxruntime, TFLite Micro, and LiteRT with
  BUILTIN_REF kernels (against the reference's "litert" semantics: LiteRT 2.3's reference FULLY_CONNECTED rounds
  once where TFLite Micro rounds twice; the report also counts where LiteRT and TFLite Micro differ);
* float-scale (not bit-exact by design): the QDQ model in onnxruntime and LiteRT's optimized kernels requantize
  in float or with their own rounding; they must stay within 1 LSB *per op*: every op output a runtime exposes is
  compared with the reference kernel applied to that runtime's own inputs of the op, so differences do not
  accumulate along the network. XNNPACK (LiteRT's default) exposes only the outputs: their difference is reported
  in output steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq import targets
from edgeq.data import CalibrationData, InputSpec
from edgeq.errors import DataError, UnsupportedError
from edgeq.reference.executor import kernel, run_all_semantics
from edgeq.reference.interface import graph_batch, model_inputs
from edgeq.tflite_format.flatbuffer import Graph


def reference_graph(artifacts: list[Path]) -> Graph:
    """The TFLite graph the reference runs: one an artifact stores, else one an artifact lowers to. Artifacts of
    different quantized models (a QDQ .onnx built for a CPU whose weight pairs are bounded, --cpu x86-avx2, beside
    the .tflite of the same conversion) are refused: one reference cannot hold both."""
    found = [
        (path, target.stores_integer_graph, graph)
        for path in artifacts
        for target in targets.claiming(path)
        if (graph := target.integer_graph(path)) is not None
    ]
    stored = [(path, graph) for path, stores, graph in found if stores]
    if len(stored) > 1:
        raise UnsupportedError("give at most one .tflite (the artifacts must come from one quantized model)")
    if not found:
        raise UnsupportedError("verify needs the .tflite or the QDQ .onnx the other artifacts were built from")
    first_path, first = stored[0] if stored else found[0][::2]
    for path, _, graph in found:
        if (name := _differing_constant(first, graph)) is not None:
            raise UnsupportedError(
                f"{path} and {first_path} are different quantized models (constant {name} differs, as where "
                "the QDQ model's weight pairs were bounded for --cpu x86-avx2): verify them separately"
            )
    return first


def _differing_constant(a: Graph, b: Graph) -> str | None:
    """The name of a constant tensor both graphs hold with different values, or None."""
    constants = {t.name: t.data for t in a.tensors if t.data is not None}
    for tensor in b.tensors:
        other = constants.get(tensor.name)
        if tensor.data is not None and other is not None and not np.array_equal(tensor.data, other):
            return tensor.name
    return None


def data_specs(graph: Graph) -> list[InputSpec]:
    """What the data must hold: one float array per graph input (either layout; model_inputs lays it out)."""
    return [
        InputSpec(graph.tensors[i].name, (None,) * len(graph.tensors[i].shape), np.dtype(np.float32))
        for i in graph.inputs
    ]


def _differences(got: list[np.ndarray], want: list[np.ndarray], names: list[str]) -> dict:
    """Per output: mismatching elements and the largest difference (in integer steps)."""
    rows = {}
    for name, g, w in zip(names, got, want, strict=True):
        diff = np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64))
        rows[name] = {"mismatches": int(np.count_nonzero(diff)), "max_abs_diff": float(diff.max(initial=0.0))}
    return rows


def per_op_steps(graph: Graph, inputs: list[np.ndarray], observed: dict[int, np.ndarray]) -> dict[str, float]:
    """For each op whose output the runtime exposed (OBSERVED: tensor index -> integers, TFLite layout): the largest
    difference between that output and the reference kernel run on the runtime's own inputs of the op. Ops whose
    output was not exposed are computed by the reference and feed the next op."""
    values = dict(zip(graph.inputs, inputs, strict=True)) | observed
    steps = {}
    for number, op in enumerate(graph.operators):
        args = [None if i < 0 else values[i] if i in values else graph.tensors[i].data for i in op.inputs]
        results = kernel(op.opcode)(graph, op, args)
        for index, result in zip(op.outputs, results, strict=True):
            if index in observed:
                diff = np.abs(observed[index].astype(np.int64) - result.astype(np.int64))
                steps[f"{number} {op.opcode} {graph.tensors[index].name}"] = float(diff.max(initial=0))
            else:
                values[index] = result
    return steps


def _summary(steps: dict[str, float]) -> dict:
    worst = max(steps, key=steps.get) if steps else None
    return {
        "ops_checked": len(steps),
        "max_steps": steps[worst] if worst else 0.0,
        "worst_op": worst,
        "ops_over_1_lsb": sorted(name for name, d in steps.items() if d > 1),
    }


def verify(
    artifacts: list[str | Path],
    data: CalibrationData,
    *,
    samples: int = 16,
    graph: Graph | None = None,
    per_op: bool = True,
) -> dict:
    """Run every artifact and the integer reference on the first SAMPLES samples of DATA; see the module doc.
    GRAPH is reference_graph(ARTIFACTS) when the caller already has it; without PER_OP the float-scale runtimes
    are compared at the outputs only."""
    paths = [Path(p) for p in artifacts]
    graph = graph or reference_graph(paths)
    names = [graph.tensors[i].name for i in graph.outputs]
    batches = []
    for batch in data.batches(graph_batch(graph)):  # one invocation each
        batches.append(model_inputs(graph, batch))
        if len(batches) == samples:
            break
    if not batches:
        raise DataError("the data has no samples")
    inputs = [np.concatenate(parts) for parts in zip(*batches, strict=True)]
    expected = {"tflite-micro": [], "litert": []}
    for sample in batches:  # one sample at a time keeps the reference's temporaries small
        for semantics, outputs in run_all_semantics(graph, sample).items():
            expected[semantics].append(outputs)
    reference = {k: [np.concatenate(p) for p in zip(*v, strict=True)] for k, v in expected.items()}

    exact, float_scale, by_op, litert_vs_micro = {}, {}, {}, None
    for path in paths:
        for target in targets.claiming(path):
            for run in target.integer_runs(path, graph, batches):
                if run.outputs is not None:
                    rows = _differences(run.outputs, reference[run.semantics], names)
                    (exact if run.exact else float_scale)[run.runtime] = rows
                    if run.semantics != "tflite-micro":
                        litert_vs_micro = _differences(run.outputs, reference["tflite-micro"], names)
                if run.per_op is not None and per_op:
                    by_op[run.runtime] = _summary(per_op_steps(graph, inputs, run.per_op))
    mismatching = sum(row["mismatches"] for rows in exact.values() for row in rows.values())
    return {
        "samples": len(batches),
        "output_elements": int(sum(r.size for r in reference["tflite-micro"])),
        "exact": exact,
        "float_scale": float_scale,
        "per_op": by_op,
        "within_1_lsb_per_op": all(not row["ops_over_1_lsb"] for row in by_op.values()),
        "litert_reference_vs_tflite_micro": litert_vs_micro,
        "bit_exact": mismatching == 0,
    }


def format_verification(report: dict) -> str:
    lines = [
        f"{report['samples']} samples, {report['output_elements']} output elements; against edgeq's integer "
        "reference (TFLite Micro semantics; LiteRT's reference kernels against its LiteRT semantics):"
    ]
    for kind, title in (("exact", "must be exact"), ("float_scale", "float-scale requantization")):
        for runtime, rows in report[kind].items():
            for output, row in rows.items():
                lines.append(
                    f"  {runtime:<44} {output}: {row['mismatches']} mismatching, "
                    f"max diff {row['max_abs_diff']:g} LSB ({title})"
                )
    for runtime, row in report["per_op"].items():
        lines.append(
            f"  {runtime:<44} per op: at most {row['max_steps']:g} LSB over {row['ops_checked']} ops"
            + (f", over 1 LSB: {', '.join(row['ops_over_1_lsb'])}" if row["ops_over_1_lsb"] else "")
        )
    if report["litert_reference_vs_tflite_micro"]:
        for output, row in report["litert_reference_vs_tflite_micro"].items():
            lines.append(f"  LiteRT reference vs TFLite Micro {output}: {row['mismatches']} mismatching")
    lines.append("bit-exact: yes" if report["bit_exact"] else "bit-exact: NO")
    lines.append("float-scale runtimes within 1 LSB per op: " + ("yes" if report["within_1_lsb_per_op"] else "NO"))
    return "\n".join(lines)


def one_line(report: dict) -> str:
    """The exact runtimes' mismatching output elements, in one line."""
    counts = [
        f"{runtime} {sum(row['mismatches'] for row in rows.values())}" for runtime, rows in report["exact"].items()
    ]
    verdict = "bit-exact" if report["bit_exact"] else "NOT bit-exact (see report.json)"
    return (
        f"against the integer reference on {report['samples']} samples: {', '.join(counts)} mismatching elements; "
        + verdict
    )
