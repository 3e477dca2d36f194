"""``edgeq compare``: per-output and per-layer error of a quantized artifact against its float model.

The float model is preprocessed exactly as ``edgeq quantize`` preprocesses it, so its tensor names are those the
QDQ model and the .tflite keep; it runs in onnxruntime with every float tensor exposed. The artifact runs in the
target that claims it (edgeq.targets), which exposes the float model's tensors it holds (``Target.probe``):
dequantized, in the ONNX layout and the float model's units. For each tensor the error is accumulated over all
samples as

    SQNR = 10 log10( sum x_float^2 / sum (x_float - x_quant)^2 )   [dB]

(edgeq.measure.metrics.ErrorSums: streaming sums, so memory does not grow with the data). A Softmax input is
compared where it counts: entries more than SOFTMAX_INPUT_SPAN (32) below their row's float maximum are raised to
that floor in both tensors, since their weights are below e^-32 either way (an attention mask's -10^4 saturates
at the bottom of the quantized range, which is no error; edgeq.quantization.plan).
"""

from __future__ import annotations

import graphlib
import itertools
import math
from pathlib import Path

import numpy as np

from edgeq import targets
from edgeq.data import CalibrationData
from edgeq.io.onnx_model import float_tensor_names, load_model, to_proto
from edgeq.io.session import exposing, fixed_batch_size, run_batches
from edgeq.measure.metrics import ErrorSums
from edgeq.passes.preprocess import preprocess
from edgeq.quantization.plan import SOFTMAX_INPUT_SPAN


def compare(float_path, quant_path, data: CalibrationData, *, batch_size: int = 16) -> dict:
    """SQNR and max abs error per graph output and per float tensor the artifact at QUANT_PATH keeps."""
    return compare_artifacts(float_path, [quant_path], data, batch_size=batch_size)[quant_path]


def compare_artifacts(float_path, quant_paths: list, data: CalibrationData, *, batch_size: int = 16) -> dict:
    """``compare`` for each of QUANT_PATHS (result by path), the float model preprocessed and run once for all."""
    float_model = load_model(float_path)
    preprocess(float_model, sample_shapes=data.sample_shapes())  # the graph quantization saw, tensor by tensor
    batch_size = fixed_batch_size(float_model) or batch_size
    float_proto = to_proto(float_model)
    outputs = [o.name for o in float_proto.graph.output]
    candidates = [*outputs, *float_tensor_names(float_proto)]
    probes = {path: targets.claiming(path)[0].probe(Path(path), candidates) for path in dict.fromkeys(quant_paths)}
    kept = {name for probe in probes.values() for name in probe.names}
    names = outputs + [name for name in candidates[len(outputs) :] if name in kept and name not in outputs]
    float_session = exposing(float_proto, names)
    sums = {path: {name: ErrorSums() for name in probe.names} for path, probe in probes.items()}
    softmax_axes = _softmax_input_axes(float_model)
    for batch, float_values in run_batches(float_session, names, data, batch_size):
        floats = dict(zip(names, float_values, strict=True))
        floors = {
            name: floats[name].max(axis=axis, keepdims=True) - SOFTMAX_INPUT_SPAN
            for name, axis in softmax_axes.items()
            if name in floats
        }
        for name, floor in floors.items():
            floats[name] = np.maximum(floats[name], floor)
        for path, probe in probes.items():
            tested = probe.run(batch)
            for name, errors in sums[path].items():
                errors.add(floats[name], np.maximum(tested[name], floors[name]) if name in floors else tested[name])
            del tested  # one artifact's tensors at a time
        # dropped before the next batch runs: every exposed tensor of one batch is alive at a time, not two
        del floats, float_values, floors
    results = {}
    for path, probe in probes.items():
        errors = {name: sums[path][name].to_dict() for name in probe.names}
        layers = [name for name in probe.names if name not in outputs]
        result = {
            "samples": data.num_samples,
            "outputs": {name: errors[name] for name in outputs},
            "layers": {name: errors[name] for name in layers},
        }
        result["largest_losses"] = largest_losses(float_model, {name: e["sqnr_db"] for name, e in errors.items()})
        if probe.kernels:
            result["kernels"] = probe.kernels
        results[path] = result
    return results


def _softmax_input_axes(model) -> dict[str, int]:
    """Tensor name -> the axis its Softmax normalizes (opset 13+: one axis; before: the flattened axes from it on,
    whose row maximum is taken over the last one only, a floor that is never higher)."""
    default = -1 if model.opset_imports.get("", 13) >= 13 else 1
    axes = {}
    for node in model.graph:
        if node.op_type == "Softmax":
            axes[node.inputs[0].name] = -1 if default == 1 else node.attributes.get_int("axis", default)
    return axes


def largest_losses(float_model, sqnr: dict[str, float], count: int = 5) -> list[dict]:
    """The COUNT nodes that add the most noise. A tensor's relative noise power is 10^(-SQNR/10); a node adds its
    output's minus that of its worst compared input (a graph input is exact), reported as the SQNR that noise alone
    would have (``added_noise_sqnr_db``: lower is worse). Nodes whose inputs are not compared (folded into them)
    are left out: their loss is not isolated."""

    def noise(db: float) -> float:
        return 10.0 ** (-db / 10.0)

    rows = []
    for node in float_model.graph:
        inputs = [sqnr[v.name] for v in node.inputs if v is not None and v.name in sqnr]
        if not inputs and not any(v is not None and v.is_graph_input() for v in node.inputs):
            continue
        before = min(inputs, default=math.inf)
        for value in node.outputs:
            if value.name in sqnr:
                added = noise(sqnr[value.name]) - noise(before)
                rows.append(
                    {
                        "node": node.name,
                        "op": node.op_type,
                        "sqnr_db": sqnr[value.name],
                        "input_sqnr_db": before,
                        "added_noise_sqnr_db": round(-10.0 * math.log10(added), 2) if added > 0 else math.inf,
                    }
                )
    rows.sort(key=lambda row: row["added_noise_sqnr_db"])
    return rows[:count]


def layer_order(results: dict[str, dict]) -> list[str]:
    """Every compared layer of RESULTS in the float model's graph order. Each result lists the float tensors its
    model also has (an equalized model has tensors the default one lacks, and the reverse), each list in graph
    order, so one layer keeps one x position across models: the union, ordered by every list's succession."""
    order = graphlib.TopologicalSorter()
    for result in results.values():
        names = list(result["layers"])
        for name in names[:1]:
            order.add(name)
        for before, after in itertools.pairwise(names):
            order.add(after, before)
    return list(order.static_order())


def plot_layers(results: dict[str, dict], path) -> None:
    """A PNG of per-layer SQNR: layers in graph order on the x-axis, one line per quantized model."""
    from edgeq.io.figures import pyplot, save_png

    figure, axes = pyplot().subplots(figsize=(12, 4.5))
    position = {name: i for i, name in enumerate(layer_order(results))}
    for label, result in results.items():
        x = [position[name] for name in result["layers"]]
        values = [row["sqnr_db"] for row in result["layers"].values()]
        axes.plot(x, values, marker=".", label=Path(label).name)
    axes.set_xlabel("layer (graph order)")
    axes.set_ylabel("SQNR vs float (dB)")
    axes.grid(alpha=0.3)
    axes.legend()
    save_png(figure, path, dpi=110)


def format_comparison(results: dict[str, dict]) -> str:
    """A text table of RESULTS (artifact -> compare result): SQNR and max error per tensor for one artifact, SQNR
    per tensor and artifact (layers in graph order) for several."""
    paths = list(results)
    first = results[paths[0]]
    rows = {"outputs": list(first["outputs"]), "layers": layer_order(results)}
    names = [*rows["outputs"], *rows["layers"]]
    width = min(72, max(len("tensor"), *(len(n) for n in names)))

    def shorten(name: str) -> str:  # keep the end of long names: it says which layer
        return name if len(name) <= width else "..." + name[-(width - 3) :]

    lines = []
    if len(paths) == 1:
        lines.append(f"{'tensor':<{width}} {'SQNR dB':>9} {'max abs err':>12}")
        for section in ("outputs", "layers"):
            lines.append(f"-- {section}")
            for name, row in first[section].items():
                lines.append(f"{shorten(name):<{width}} {row['sqnr_db']:>9.2f} {row['max_abs_error']:>12.4g}")
        return "\n".join(lines)
    labels = [Path(p).name for p in paths]
    lines.append(f"{'SQNR dB':<{width}} " + " ".join(f"{label[-18:]:>18}" for label in labels))
    for section in ("outputs", "layers"):
        lines.append(f"-- {section}")
        for name in rows[section]:
            cells = [results[p][section].get(name, {}).get("sqnr_db") for p in paths]
            text = " ".join(f"{c:>18.2f}" if c is not None else f"{'-':>18}" for c in cells)
            lines.append(f"{shorten(name):<{width}} {text}")
    return "\n".join(lines)
