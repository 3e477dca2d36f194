"""The TFLite Micro target: the .tflite with ``<name>_model_data.h/.cc``, its measured arena and op resolver.

It embeds the TFLite target's .tflite of the same conversion (targets/tflite/target.py, ``tflite_of``); it never
lowers anything itself. Its part of `edgeq profile` on a .tflite: the arena TFLite Micro needs, the flash the
model takes, the resolver calls, and the latency estimated on Cortex-M4F/M7/M55 (targets/tflm/mcu.py) from the
static analysis. In `edgeq verify` TFLite Micro is held to the integer reference bit for bit.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from edgeq.errors import RecipeError
from edgeq.targets import register
from edgeq.targets.target import Build, Emitted, IntegerRun, Target
from edgeq.targets.tflite.analysis import analyze_tflite
from edgeq.targets.tflite.artifact import build
from edgeq.targets.tflite.target import TfliteTarget, float_tflite, surveyed, tflite_of
from edgeq.targets.tflm import artifact
from edgeq.targets.tflm.arena import measure_arena
from edgeq.targets.tflm.interpreter import default_arena_size, invoke_tflm, tflm_interpreter
from edgeq.targets.tflm.mcu import PROFILES, estimate
from edgeq.targets.tflm.sources import c_identifier, missing_micro_kernel, resolver_ops
from edgeq.tflite_format.flatbuffer import Graph, read


def _installed() -> bool:
    return importlib.util.find_spec("tflite_micro") is not None


class TfliteMicroTarget(Target):
    name = "tflm"
    description = "TFLite Micro: the .tflite plus a C array, the op resolver list and the measured arena"
    options = TfliteTarget.options  # those of the .tflite it embeds
    suffixes = (".tflite",)
    activation_types = TfliteTarget.activation_types
    takes_int16_choice = True

    def emit(self, conversion: Build) -> Emitted:
        tflite = tflite_of(self, conversion)
        refusal = missing_micro_kernel(tflite.lowered.graph)
        if refusal is not None:
            raise refusal
        written = artifact.emit(tflite.data, conversion.outdir, c_identifier(conversion.name))
        files = written.pop("files")
        paths = [Path(files[kind]) for kind in ("tflite", "header", "source")]
        return Emitted([*paths, *float_tflite(self, conversion)], written, tflite.lowered.graph)

    def arena(self, qdq_model) -> dict:
        """The .tflite convert would embed (kernels "micro"), its arena measured in TFLite Micro's interpreter."""
        measured = measure_arena(build(qdq_model, kernels="micro").data)
        return {"arena_bytes": measured.arena_bytes, "persistent_bytes": measured.recorded_tail or 0}

    def artifact_names(self, stem: str) -> tuple[str, ...]:
        tflite = TfliteTarget().artifact_names(stem)
        try:
            name = c_identifier(stem)
        except RecipeError:  # no sources can have been written for this stem
            return tflite
        return *tflite, f"{name}_model_data.h", f"{name}_model_data.cc"

    def summary(self, report: dict) -> str:
        return f"flash {report['flash_bytes']} B, arena {report['arena_bytes']} B"

    def node_plan(self, model, shared: dict) -> dict:
        lowered, rows = surveyed(model, shared)  # the .tflite it embeds, and the kernels TFLite Micro has for it
        result = {"nodes": rows}
        refusal = None if any(r.lowered == "refused" for r in lowered.coverage) else missing_micro_kernel(lowered.graph)
        return result | ({"refusal": str(refusal)} if refusal is not None else {})

    def profile(self, path: Path, *, runs: int, warmup: int, threads: list[int], progress: bool) -> dict:
        data = path.read_bytes()
        graph = read(data)
        analysis = analyze_tflite(graph)
        result = {"mcu_estimate": {name: estimate(analysis, device) for name, device in PROFILES.items()}}
        if not _installed() or not any(t.dtype in (np.int8, np.int16) for t in graph.tensors):
            return result  # an integer model's arena, measured where TFLite Micro is installed
        if (missing := missing_micro_kernel(graph)) is not None:
            result["tflm"] = {"refused": str(missing)}  # profiled in LiteRT; TFLite Micro cannot run it
        else:
            arena = measure_arena(data)
            result["tflm"] = {
                "flash_bytes": len(data),
                "arena_bytes": arena.arena_bytes,
                "recorded_allocation_total": arena.recorded_total,
                "resolver_ops": resolver_ops(data),
            }
        return result

    def format_profile(self, result: dict) -> str:
        lines = []
        if "refused" in result.get("tflm", {}):
            lines.append(f"  TFLite Micro: cannot run it ({result['tflm']['refused']})")
        elif "tflm" in result:
            tflm = result["tflm"]
            lines.append(
                f"  TFLite Micro: arena {tflm['arena_bytes']} B (smallest that runs), flash {tflm['flash_bytes']} B, "
                f"resolver: {', '.join(tflm['resolver_ops'])}"
            )
        for device, row in result.get("mcu_estimate", {}).items():
            lines.append(f"estimate on {device}: {row['latency_ms']:.1f} ms ({row['note']})")
        return "\n".join(lines)

    def integer_runs(self, path: Path, graph: Graph, inputs: list[list[np.ndarray]]) -> list[IntegerRun]:
        if not _installed() or missing_micro_kernel(graph) is not None:
            return []  # Linux x86_64 only, and int8 kernels TFLite Micro has; the report names the runtimes that ran
        data = path.read_bytes()
        micro = tflm_interpreter(data, default_arena_size(graph))
        per_sample = [invoke_tflm(micro, sample, len(graph.outputs)) for sample in inputs]
        outputs = [np.concatenate(parts) for parts in zip(*per_sample, strict=True)]
        return [IntegerRun("TFLite Micro", exact=True, outputs=outputs)]


register(TfliteMicroTarget())
