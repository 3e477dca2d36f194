"""The TFLite Micro artifacts: the .tflite with its C++ sources, written only after a run in TFLite Micro.

``validate`` runs samples in the TFLite Micro Python interpreter with the measured arena, resetting the interpreter
between samples (stateful models start from their initial state each time); ``emit`` measures the arena, renders
the sources (targets/tflm/sources.py), runs the model once and only then writes the three files atomically.
"""

from __future__ import annotations

import os

import numpy as np

from edgeq.errors import DataError, ExecutionError
from edgeq.io.files import prepare_output_dir, write_bytes_atomic, write_text_atomic
from edgeq.targets.tflm.arena import ArenaReport, captured_stderr, measure_arena
from edgeq.targets.tflm.interpreter import invoke_tflm, tflm_interpreter
from edgeq.targets.tflm.sources import c_source, check_name, resolver_ops
from edgeq.tflite_format.flatbuffer import read


def _details(detail: dict) -> dict:
    quantization = detail["quantization_parameters"]
    return {
        "shape": [int(d) for d in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scales": [float(s) for s in quantization["scales"]],
        "zero_points": [int(z) for z in quantization["zero_points"]],
        "quantized_dimension": int(quantization["quantized_dimension"]),
    }


def validate(model_bytes: bytes, inputs: list[list[np.ndarray]], *, arena: ArenaReport | None = None) -> dict:
    """Run each sample (one array per model input, in the model's shape) in TFLite Micro with the measured arena.

    ``outputs[j]`` concatenates every sample's output j along axis 0 (the integer reference's batch layout).
    """
    if not inputs:
        raise DataError("validate needs at least one sample")
    arena = arena or measure_arena(model_bytes)
    graph = read(model_bytes)
    per_sample = []
    try:
        with captured_stderr() as log:
            interpreter = tflm_interpreter(model_bytes, arena.arena_bytes)
            for k, sample in enumerate(inputs):
                if len(sample) != len(graph.inputs):
                    raise DataError(
                        f"sample {k} has {len(sample)} arrays; the model has {len(graph.inputs)} inputs"
                    )
                per_sample.append(invoke_tflm(interpreter, sample, len(graph.outputs)))
                interpreter.reset()  # every sample starts from the initial state (matters for stateful models)
    except (RuntimeError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else log.first_line()
        raise ExecutionError(f"TFLite Micro failed on sample {len(per_sample)}: {message}") from None
    return {
        "outputs": [np.concatenate([outs[j] for outs in per_sample]) for j in range(len(graph.outputs))],
        "input_details": [_details(interpreter.get_input_details(i)) for i in range(len(graph.inputs))],
        "output_details": [_details(interpreter.get_output_details(i)) for i in range(len(graph.outputs))],
        "arena_bytes": arena.arena_bytes,
        "samples": len(inputs),
    }


def emit(
    model_bytes: bytes,
    outdir: str | os.PathLike,
    name: str,
    inputs: list[list[np.ndarray]] | None = None,
    *,
    arena: ArenaReport | None = None,
) -> dict:
    """Write ``<name>.tflite``, ``<name>_model_data.h`` and ``<name>_model_data.cc`` into OUTDIR after running
    the model in TFLite Micro with the measured arena (on INPUTS, or once on zeros). Every file is written
    atomically, and only after the run succeeded."""
    check_name(name)
    arena = arena or measure_arena(model_bytes)
    header, source = c_source(model_bytes, name, arena=arena)
    if inputs is None:
        graph = read(model_bytes)
        inputs = [[np.zeros(graph.tensors[i].shape, graph.tensors[i].dtype) for i in graph.inputs]]
    run = validate(model_bytes, inputs, arena=arena)
    out = prepare_output_dir(outdir)
    files = {
        "tflite": out / f"{name}.tflite",
        "header": out / f"{name}_model_data.h",
        "source": out / f"{name}_model_data.cc",
    }
    write_bytes_atomic(files["tflite"], model_bytes)
    write_text_atomic(files["header"], header)
    write_text_atomic(files["source"], source)
    ops = resolver_ops(model_bytes)
    return {
        "name": name,
        "flash_bytes": len(model_bytes),
        "arena_bytes": arena.arena_bytes,
        "recorded_total": arena.recorded_total,
        "recorded_head": arena.recorded_head,
        "recorded_tail": arena.recorded_tail,
        "arena_explanation": arena.explanation,
        "ops": ops,
        "op_resolver": f"tflite::MicroMutableOpResolver<{len(ops)}>",
        "samples_run": run["samples"],
        "files": {kind: str(path) for kind, path in files.items()},
    }
