"""The integer-only ONNX target: ``<name>.integer.onnx``, the .tflite's integer arithmetic as an ONNX model.

Built from the int8 QDQ model lowered as for TFLite (targets/tflite/lower), so it computes what the .tflite
computes in TFLite Micro, in any ONNX runtime (the package docstring says how). It is an .onnx run in onnxruntime,
so it is the ONNX Runtime target in everything but what it emits and how `edgeq verify` holds it: to the integer
reference bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import read_proto
from edgeq.io.session import session
from edgeq.targets import register
from edgeq.targets.integer_onnx import artifact
from edgeq.targets.integer_onnx.model import integer_only_model
from edgeq.targets.onnxruntime import artifact as ort_artifact
from edgeq.targets.onnxruntime.target import (
    INTEGER_ONNX_SUFFIX,
    OnnxRuntimeTarget,
    float_feeds,
    output_integers,
)
from edgeq.targets.target import Build, Emitted, IntegerRun, output_summary
from edgeq.targets.tflite.target import surveyed
from edgeq.tflite_format.flatbuffer import Graph


class IntegerOnnxTarget(OnnxRuntimeTarget):
    name = "onnxruntime-integer"
    description = (
        "integer-only .onnx: integer arithmetic only between the input Quantize and the output Dequantize, "
        "bit-exact with the integer reference"
    )
    options = ()
    suffixes = (INTEGER_ONNX_SUFFIX,)
    activation_types = ("int8",)
    modes = ("static",)
    on_request = True  # `edgeq convert --integer-only`

    def claims(self, path: Path) -> bool:
        return path.name.endswith(self.suffixes)

    def emit(self, build: Build) -> Emitted:
        model, report = build.quantized("int8")
        emitted = artifact.emit(model, build.outdir, build.name)
        path, graph = emitted.pop("path"), emitted.pop("graph")
        return Emitted([path], {**emitted, **report}, graph)

    def artifact_names(self, stem: str) -> tuple[str, ...]:
        return (f"{stem}{INTEGER_ONNX_SUFFIX}",)

    def validate(self, build: Build, emitted: Emitted) -> dict:
        # accuracy only: the speed check and its note are about the QDQ model's fused kernels
        return ort_artifact.validate(build.float_path, emitted.artifacts[0], build.eval_data, labels=build.labels)

    def summary(self, report: dict) -> str:
        return f"{report['nodes']} integer-only nodes; " + output_summary(report["validation"])

    def node_plan(self, model, shared: dict) -> dict:
        # built from the .tflite's lowering (artifact.emit): its refusals, then the integer-only model's own (a
        # float island, an operator without an integer-only converter)
        lowered, rows = surveyed(model, shared)
        result = {"nodes": rows}
        if not any(record.lowered == "refused" for record in lowered.coverage):
            try:
                integer_only_model(
                    lowered.graph, input_layouts=lowered.input_layouts, output_layouts=lowered.output_layouts
                )
            except EdgeqError as refusal:
                result["refusal"] = str(refusal)
        return result

    def integer_graph(self, path: Path) -> Graph | None:
        return None  # the graph it was built from is not in the file: verify it with the .tflite or QDQ .onnx

    def integer_runs(self, path: Path, graph: Graph, inputs: list[list[np.ndarray]]) -> list[IntegerRun]:
        batch = [np.concatenate(parts) for parts in zip(*inputs, strict=True)]
        names = [graph.tensors[i].name for i in graph.outputs]
        outputs = session(read_proto(path)).run(names, float_feeds(graph, batch))
        return [IntegerRun(f"onnxruntime {path.name}", exact=True, outputs=output_integers(graph, outputs))]


register(IntegerOnnxTarget())
