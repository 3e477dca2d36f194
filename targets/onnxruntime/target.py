"""The ONNX Runtime target: the QDQ ``<name>.qdq.onnx`` (and ``.ort``), run in onnxruntime.

Activation type. With the recipe's ``activation_type = "auto"`` (convert's default), both int8 and uint8
activation models are built from the same calibration (same scales; the zero point moves by 128), each is loaded
by onnxruntime with all graph optimizations, and the one whose optimized graph runs more convolutions as fused
integer kernels wins, then the one that leaves fewer compute ops in float (for models without convolutions), then
int8 (what TFLite wants). What ran fused is part of the report.

Deployment CPU. The recipe's ``cpu`` (``--cpu``; auto: this machine) picks the weights ONNX Runtime's kernels
compute exactly and fast on it (edgeq.quantization.cpus: on x86 without VNNI, no two weights of a channel of a
layer run as a u8s8 GEMM above 128 in magnitude together). When that CPU is this machine, validation also times
the artifact against the fp32 model (targets/onnxruntime/speed.py) and the report says why when it is slower.

For `edgeq compare` the QDQ model's DequantizeLinear outputs carry the float tensors' names (passes.insert_qdq),
so every float tensor the QDQ model keeps is exposed; tensors that equalization left scaled per channel are
multiplied back (the channel scales the pipeline records in the metadata). For `edgeq verify` the reference graph
of a QDQ model is its TFLite lowering, and onnxruntime's integers of each op are its ``<tensor>_quantized``
QuantizeLinear outputs (a uint8 model's moved by 128 to the int8 encoding); being a float-scale runtime it is held
to 1 LSB per op.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgeq.errors import ModelError, UnsupportedError
from edgeq.io.onnx_model import clone_model, float_tensor_names, load_model, model_bytes, read_proto
from edgeq.io.session import exposing, fixed_batch_size, run_in_chunks, session
from edgeq.passes import integer_gather, layer_norm_sums, pack_int4, prelu_max
from edgeq.pipeline.stages import CHANNEL_SCALES_KEY
from edgeq.quantization.cpus import CPUS, Cpu, host_cpu, resolve_cpu
from edgeq.quantization.placement import onnxruntime_placement, placed_plan, plan_rows
from edgeq.quantization.plan import Exclusions
from edgeq.quantization.recipe import STATIC_ONLY_PASSES, Recipe
from edgeq.reference.interface import dequantized, integers, tensor_perm
from edgeq.targets import register
from edgeq.targets.onnxruntime import artifact, integer_pads, profile, speed
from edgeq.targets.onnxruntime.analysis import analyze_onnx
from edgeq.targets.onnxruntime.fusion import fusion_report
from edgeq.targets.target import Build, Emitted, IntegerRun, Option, Target, output_summary
from edgeq.targets.tflite.lower import lower
from edgeq.tflite_format.flatbuffer import Graph

INTEGER_ONNX_SUFFIX = ".integer.onnx"


def _fusion_score(fusion: dict, order: int) -> tuple:
    """More integer convolutions first, then fewer compute ops left in float, then the earlier candidate."""
    return (fusion["convs_fused"], -len(fusion["float_compute"]), -order)


def _may_be_dynamic(recipe: Recipe) -> bool:
    """Mode auto may pick the dynamic model only where the recipe pins nothing it cannot honour."""
    return (
        recipe.mode == "auto"
        and recipe.activation_type == "auto"
        and recipe.weight_bits == 8
        and not {"int4", "int16"} & set(recipe.layers.values())
        and not set(recipe.passes) & set(STATIC_ONLY_PASSES)
    )


def _transformer(report: dict) -> bool:
    """A static build placed for ONNX Runtime as a transformer (it has layer norms) and without convolutions,
    which dynamic mode would leave float (ConvInteger is slow): the graphs where dynamic mode can win."""
    convolutions = {"Conv", "ConvTranspose"} & set(report["quantized_nodes"])
    return "placement" in report and not convolutions


def _write_candidate(build: Build, activation_type: str, mode: str, limit: int | None, path: Path) -> dict:
    """One candidate artifact in ONNX Runtime's form (pads and embedding rows on integers, residual sums that
    escape its slower SkipLayerNormalization, PRelus as a Mul and a Max, 4-bit weights packed as INT4) written to
    PATH; what ONNX Runtime fuses in it and how its 4-bit weights are stored (``int4_*``)."""
    model = clone_model(build.quantized(activation_type, limit, True, mode).model)  # the build is shared
    pads = integer_pads.pad_integers(model)
    gathers = integer_gather.gather_integers(model)
    sums = layer_norm_sums.sums_before_layer_norms(model)
    prelus = prelu_max.prelus_as_max(model)
    storage = pack_int4.pack_int4_weights(model, build.recipe)
    path.write_bytes(model_bytes(model))
    return {
        **fusion_report(path).to_dict(),
        "pads_on_integers": pads,
        "gathers_on_integers": gathers,
        "sums_before_layer_norms": sums,
        "prelus_as_max": prelus,
        **storage,
    }


MODE_CHOICE_SAMPLES = 64  # evaluation samples the static/dynamic choice is measured on: enough to rank two models


def _worst_sqnr(build: Build, path: Path) -> float:
    """The smallest output SQNR (dB) of the model at PATH against the float model, on the first
    MODE_CHOICE_SAMPLES evaluation samples."""
    outputs = artifact.validate(build.float_path, path, build.eval_data.head(MODE_CHOICE_SAMPLES))["outputs"]
    return round(min(row["sqnr_db"] for row in outputs.values()), 2)


def _cpu_report(cpu: Cpu, limit: int | None) -> dict:
    """The CPU the artifact is for and the weight-pair bound chosen for it (its default kernels are exact)."""
    return {"name": cpu.name, "description": cpu.description, "gemm_pair_limit": limit, "why": cpu.why}


def _first_batch(build: Build, model: Path) -> dict[str, np.ndarray]:
    """Batch 1 of the evaluation data (the batch the model fixes, where it fixes one)."""
    return next(iter(build.eval_data.batches(fixed_batch_size(load_model(model)) or 1)))


class OnnxProbe:
    """The float tensors a QDQ (or float) .onnx shares with the float model, in the float model's units."""

    kernels = None

    def __init__(self, path: Path, names: list[str]):
        proto = read_proto(path)
        kept = set(float_tensor_names(proto)) | {o.name for o in proto.graph.output}
        self.names = [name for name in names if name in kept]
        self.session = exposing(proto, self.names)
        metadata = {entry.key: entry.value for entry in proto.metadata_props}
        self.scales = {
            name: np.asarray(scale, np.float32)
            for name, scale in json.loads(metadata.get(CHANNEL_SCALES_KEY, "{}")).items()
        }

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = dict(zip(self.names, self.session.run(self.names, batch), strict=True))
        for name, scale in self.scales.items():  # tensors equalization left as original / s, per channel (axis 1)
            if name in values:
                shape = [1] * values[name].ndim
                shape[1] = -1
                values[name] = values[name] * scale.reshape(shape)
        return values


def _qdq_integers(model: onnx.ModelProto, graph: Graph, feeds: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """The QDQ model's integers of every TFLite tensor it quantizes (its <name>_quantized), int8 encoding, in
    its TFLite layout."""
    produced = {out for node in model.graph.node if node.op_type == "QuantizeLinear" for out in node.output}
    wanted = {
        index: f"{tensor.name}_quantized"
        for index, tensor in enumerate(graph.tensors)
        if f"{tensor.name}_quantized" in produced and tensor.quantization is not None
    }
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    exposed.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in wanted.values())
    arrays = run_in_chunks(session(exposed), list(wanted.values()), feeds)
    found = {}
    for (index, _), array in zip(wanted.items(), arrays, strict=True):
        if array.dtype == np.uint8 and graph.tensors[index].dtype == np.int8:
            array = (array.astype(np.int16) - 128).astype(np.int8)  # the same scale, the zero point moved by 128
        perm = tensor_perm(graph, index)
        found[index] = array.transpose(perm) if array.ndim == len(perm) else array
    return found


def float_feeds(graph: Graph, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The integer inputs dequantized, ONNX layout: an ONNX model's QuantizeLinear maps them back exactly."""
    return {graph.tensors[i].name: dequantized(graph, i, array) for i, array in zip(graph.inputs, inputs, strict=True)}


def output_integers(graph: Graph, outputs: list[np.ndarray]) -> list[np.ndarray]:
    return [integers(graph, i, o) for i, o in zip(graph.outputs, outputs, strict=True)]


def _refuse_ort(path: Path, command: str) -> None:
    if path.suffix == ".ort":
        raise UnsupportedError(
            f"{path}: {command} reads .onnx and .tflite artifacts (onnxruntime has no public reader for .ort files; "
            "give the .onnx it was converted from)"
        )


class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    description = "QDQ .onnx for onnxruntime (and the .ort format for minimal mobile builds)"
    options = (Option("ort_format", "Also write .ort and required_operators.config."),)
    suffixes = (".onnx", ".ort")
    activation_types = ("int8", "uint8", "int16")
    modes = ("static", "dynamic")

    def claims(self, path: Path) -> bool:
        return super().claims(path) and not path.name.endswith(INTEGER_ONNX_SUFFIX)

    def check_file(self, path: Path) -> None:
        if path.suffix == ".onnx":
            read_proto(path)  # the safe loader's checks (edgeq.io.onnx_model) before onnxruntime sees the file

    def emit(self, build: Build) -> Emitted:
        cpu = resolve_cpu(build.recipe.cpu)
        recipe_type = build.recipe.activation_type
        # int16 activations run in float between their Q/DQ pairs (no integer kernels): no pair bound to keep
        limit = None if recipe_type == "int16" else cpu.pair_limit(build.recipe.widest_weight_bits)
        if build.recipe.mode == "dynamic":
            candidates = {"dynamic": ("uint8", "dynamic")}  # DynamicQuantizeLinear's type, whatever the recipe says
        else:
            candidates = {t: (t, "static") for t in (["int8", "uint8"] if recipe_type == "auto" else [recipe_type])}
        with tempfile.TemporaryDirectory() as tmp:
            paths = {name: Path(tmp) / f"{name}.onnx" for name in (*candidates, "dynamic")}
            fusions = {name: _write_candidate(build, *spec, limit, paths[name]) for name, spec in candidates.items()}
            order = list(candidates)
            chosen = max(order, key=lambda name: _fusion_score(fusions[name], order.index(name)))
            activation_type, mode = candidates[chosen]
            report = build.quantized(activation_type, limit, True, mode).report
            mode_choice = None
            if _may_be_dynamic(build.recipe) and _transformer(report):
                fusions["dynamic"] = _write_candidate(build, "uint8", "dynamic", limit, paths["dynamic"])
                mode_choice = {"static": _worst_sqnr(build, paths[chosen]), "dynamic": _worst_sqnr(build, paths["dynamic"])}
                if mode_choice["dynamic"] > mode_choice["static"]:
                    chosen, report = "dynamic", build.quantized("uint8", limit, True, "dynamic").report
            written = artifact.emit(
                paths[chosen].read_bytes(), build.outdir, f"{build.name}.qdq", ort_format=build.option(self, "ort_format")
            )
        report = {
            **report,
            "mode": report.get("mode", "static"),
            "cpu": _cpu_report(cpu, limit),
            "activation_type_choice": {name: fusions[name] for name in candidates},
            "fusion": fusions[chosen],
            **{key: value for key, value in fusions[chosen].items() if key.startswith("int4_")},
        }
        if mode_choice is not None:
            report["mode_choice"] = {
                "worst_output_sqnr_db": mode_choice,
                "why": f"a transformer: static and dynamic built, the smaller error on {MODE_CHOICE_SAMPLES} evaluation "
                "samples kept",
            }
        return Emitted(written, report)

    def artifact_names(self, stem: str) -> tuple[str, ...]:
        return f"{stem}.qdq.onnx", f"{stem}.qdq.ort"

    def validate(self, build: Build, emitted: Emitted) -> dict:
        validation = artifact.validate(build.float_path, emitted.artifacts[0], build.eval_data, labels=build.labels)
        cpu, host = CPUS[emitted.report["cpu"]["name"]], host_cpu()
        if cpu != host:
            validation["speed"] = {"not_measured": f"built for {cpu.name}; this machine is {host.name}"}
            return validation
        measured = speed.measure_speed(build.float_path, emitted.artifacts[0], _first_batch(build, emitted.artifacts[0]))
        note = speed.slower_note(measured, emitted.report["fusion"], cpu, emitted.report["activation_type"])
        validation["speed"] = {**measured, **({"note": note} if note else {})}
        return validation

    def summary(self, report: dict) -> str:
        measured = report["validation"].get("speed", {})
        if report["mode"] == "dynamic":
            parts = [f"dynamic: int8 weights, activations quantized per run, for {report['cpu']['name']}"]
        else:
            parts = [f"{report['activation_type']} activations for {report['cpu']['name']}"]
        if "mode_choice" in report:
            errors = report["mode_choice"]["worst_output_sqnr_db"]
            parts.append(f"chosen over {'static' if report['mode'] == 'dynamic' else 'dynamic'} by output error "
                         f"(worst output SQNR: static {errors['static']} dB, dynamic {errors['dynamic']} dB)")
        if "speedup" in measured:
            parts.append(f"{measured['speedup']:.2f}x fp32 speed (1 thread, batch 1)")
        parts.append(output_summary(report["validation"]))
        text = "; ".join(parts)
        return text + (f"\n  note: {measured['note']}" if "note" in measured else "")

    def profile(self, path: Path, *, runs: int, warmup: int, threads: list[int], progress: bool) -> dict:
        if path.suffix == ".onnx":
            read_proto(path)  # clear errors for a truncated or unsafe model before onnxruntime sees it
        return profile.profile(path, runs=runs, warmup=warmup, threads=threads, progress=progress)

    def format_profile(self, result: dict) -> str:
        return profile.format_profile(result)

    def runner(self, path: Path, threads: int):
        if path.suffix == ".onnx":
            read_proto(path)  # the safe loader's checks first, as for profile
        return profile.runner(path, threads)

    def analyze(self, path: Path) -> dict | None:
        if path.suffix != ".onnx":
            return None
        proto = read_proto(path)
        try:
            return analyze_onnx(proto)
        except ModelError as exc:  # the analysis names the tensor (a symbolic dimension); name the file too
            raise ModelError(f"{path}: {exc}") from None

    def node_plan(self, model, shared: dict) -> dict:
        # the plan and placement of Build.quantized(..., onnxruntime=True); ONNX Runtime runs any node left float
        plan, _ = placed_plan(model.graph, shared.get("exclusions", Exclusions()), onnxruntime_placement(model.graph))
        return {"nodes": plan_rows(model.graph, plan)}

    def probe(self, path: Path, names: list[str]) -> OnnxProbe:
        _refuse_ort(path, "compare")
        return OnnxProbe(path, names)

    def integer_graph(self, path: Path) -> Graph:
        _refuse_ort(path, "verify")
        model = load_model(path)
        if any(node.op_type == "DynamicQuantizeLinear" for node in model.graph):
            raise UnsupportedError(
                f"{path} is dynamically quantized: its activation scales are computed per run, so it implements no "
                "fixed integer graph to verify (edgeq compare measures it against the float model)"
            )
        if not any(node.op_type == "QuantizeLinear" for node in model.graph):
            raise UnsupportedError(f"{path} is not a quantized (QDQ) model: verify compares quantized artifacts")
        norms = [n.inputs[0].producer() for n in model.graph if n.op_type == "LayerNormalization"]
        if any(p is None or p.op_type != "DequantizeLinear" for p in norms):
            raise UnsupportedError(
                f"{path} is placed for ONNX Runtime (layer norms and sums float, edgeq.quantization.placement): it "
                "implements no integer TFLite graph to verify; verify the .tflite of the same conversion"
            )
        integer_pads.undo(model)  # the lowering reads the interchange form
        pack_int4.undo(model)
        integer_gather.undo(model)
        layer_norm_sums.undo(model)
        prelu_max.undo(model)
        return lower(model).graph

    def integer_runs(self, path: Path, graph: Graph, inputs: list[list[np.ndarray]]) -> list[IntegerRun]:
        model = read_proto(path)  # the safe loader: external data only from its folder
        batch = [np.concatenate(parts) for parts in zip(*inputs, strict=True)]
        feeds = float_feeds(graph, batch)
        names = [graph.tensors[i].name for i in graph.outputs]
        outputs = run_in_chunks(session(model), names, feeds)
        return [
            IntegerRun(
                f"onnxruntime {path.name}",
                exact=False,
                outputs=output_integers(graph, outputs),
                per_op=_qdq_integers(model, graph, feeds),
            )
        ]


register(OnnxRuntimeTarget())
