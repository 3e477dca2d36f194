"""What a target is: the interface every backend implements, and the records it exchanges with the rest of edgeq.

A target turns the pipeline's QDQ model into the artifacts of one runtime and knows how to run them. edgeq's
commands reach targets only through the registry (edgeq.targets): ``convert`` asks the targets a user names to
``emit`` and ``validate``; ``profile``, ``compare``, ``verify`` and ``report`` ask the targets that ``claim`` an
artifact file. A target implements what applies to it and inherits the rest:

    name, description, options       what it is called and the options it takes (the CLI makes flags of them)
    claims(path)                     whether it runs this artifact file (several targets may claim one file)
    emit(build) -> Emitted           write the artifacts (atomically) and say what they are
    artifact_names(stem)             every file name emit can write for a model named STEM, whatever the options
    validate(build, emitted)         run them on the evaluation data against the float model
    summary(report)                  one line on a conversion's result, for the command line
    profile(path, ...)               its part of `edgeq profile`: latency, memory, what the runtime fused
    format_profile(result)           that part as text
    runner(path, threads)            one inference per call, for A/B latency ratios
    analyze(path)                    static analysis of the file (edgeq.measure.footprint), where it can read it
    probe(path, names)               the artifact's values of the float model's tensors, for `edgeq compare`
    integer_graph(path)              the TFLite graph whose integers the artifact computes (the reference)
    integer_runs(path, graph, inputs)  what the artifact's runtimes compute on integer inputs, for `edgeq verify`
    node_plan(model, shared)         what it would do with each node of a float model, without data, for
                                     `edgeq inspect`

Targets may build on each other (tflm on tflite, integer-only ONNX on the TFLite lowering), never in a cycle.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import onnx_ir as ir

from edgeq.data import CalibrationData
from edgeq.errors import UnsupportedError
from edgeq.measure.latency import Run
from edgeq.pipeline import Quantized
from edgeq.quantization.recipe import Recipe
from edgeq.tflite_format.flatbuffer import Graph


@dataclass(frozen=True)
class Option:
    """An option a target takes: NAME is the keyword in the Python API (``--name`` with dashes on the CLI)."""

    name: str
    help: str
    default: object = False
    choices: tuple[str, ...] | None = None  # None: a yes/no flag


@dataclass
class Build:
    """What a conversion hands each target: where to write, the models, the data, the options given.

    ``quantized(activation_type, gemm_pair_limit=None, onnxruntime=False, mode=None)`` returns the pipeline's QDQ
    model of that activation type (with that limit on GEMM layers' weight pairs, edgeq.quantization.cpus; Q/DQ placed
    for ONNX Runtime, edgeq.quantization.placement; with mode "dynamic" the dynamically quantized model), built once
    per set of arguments for the whole conversion (every target gets the same activation scales); ``shared`` holds what one target made for
    others in the same conversion (the TFLite Micro target reuses the .tflite).
    """

    name: str
    outdir: Path
    float_path: Path
    recipe: Recipe
    quantized: Callable[..., Quantized]
    eval_data: CalibrationData
    labels: np.ndarray | None = None
    options: dict = field(default_factory=dict)
    shared: dict = field(default_factory=dict)
    targets: tuple[str, ...] = ()  # the names of every target of the conversion
    integer: Quantized | None = None  # the 8-bit QDQ model with int16 tensors chosen for it (edgeq.mixed.int16_choice)

    def option(self, target: Target, name: str):
        value = self.options.get(name)
        return next(o.default for o in target.options if o.name == name) if value is None else value

    def integer_quantized(self) -> Quantized:
        """The QDQ model the TFLite targets lower: int16 activations (16x8) when the recipe asks for them, the
        conversion's choice of int16 tensors in an 8-bit model when it made one (``integer``), else int8."""
        if self.integer is not None:
            return self.integer
        return self.quantized("int16" if self.recipe.activation_type == "int16" else "int8")


@dataclass
class Emitted:
    """The artifacts a target wrote (the main one first), what it reports about them (JSON-able), and the TFLite
    graph whose integers they compute where they implement one (a conversion checks them against it)."""

    artifacts: list[Path]
    report: dict = field(default_factory=dict)
    integer_graph: Graph | None = None

    def to_dict(self) -> dict:
        return {"artifacts": [str(path) for path in self.artifacts], **self.report}


@dataclass
class IntegerRun:
    """What one runtime computed on the reference graph's integer inputs, for `edgeq verify`.

    ``exact``: held to the integer reference bit for bit (else to 1 LSB per op); ``semantics``: whose reference
    kernels it is held to (edgeq.reference.executor.SEMANTICS); ``outputs``: the output integers in the graph's
    layout; ``per_op``: tensor index -> the integers the runtime computed for that op output, where it exposes
    them, checked against the reference kernel applied to the runtime's own inputs of the op.
    """

    runtime: str
    exact: bool
    semantics: str = "tflite-micro"
    outputs: list[np.ndarray] | None = None
    per_op: dict[int, np.ndarray] | None = None


class Probe(Protocol):
    """An artifact opened for `edgeq compare`: ``names`` are the float model's tensors it holds; ``run`` gives their
    values on a float batch, dequantized, in the ONNX layout and the float model's units."""

    names: list[str]
    kernels: str | None

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Target(abc.ABC):
    """Base of every target; the methods after ``emit`` are the defaults for what a target does not do."""

    name: ClassVar[str]
    description: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()
    suffixes: ClassVar[tuple[str, ...]] = ()
    activation_types: ClassVar[tuple[str, ...]] = ("int8",)  # the recipe's "auto" lets the target choose
    on_request: ClassVar[bool] = False  # built only when named, not by the CLI's "--target all"
    modes: ClassVar[tuple[str, ...]] = ("static",)  # the recipe modes it builds besides auto (dynamic: ORT's kernels)
    # True when the artifact *is* an integer TFLite graph (verify prefers it as the reference to one derived from
    # a QDQ model).
    stores_integer_graph: ClassVar[bool] = False
    # True when the artifact lowers ``Build.integer_quantized``, whose 8-bit model may carry int16 tensors that
    # the conversion chose by measured error (edgeq.mixed.int16_choice) where the recipe leaves the type to edgeq.
    takes_int16_choice: ClassVar[bool] = False

    def claims(self, path: Path) -> bool:
        return path.name.endswith(self.suffixes)

    def check_file(self, path: Path) -> None:  # noqa: B027 - most targets' files need no check of their own
        """Raise ModelError, naming PATH, if the artifact file PATH cannot be run safely (before any runtime
        reads it)."""

    @abc.abstractmethod
    def emit(self, build: Build) -> Emitted:
        """Write the artifacts into ``build.outdir``, atomically."""

    def artifact_names(self, stem: str) -> tuple[str, ...]:
        """The names of the files ``emit`` can write for a model named STEM: a conversion deletes those an earlier
        run left in its folder and it did not write again."""
        return ()

    def validate(self, build: Build, emitted: Emitted) -> dict:
        return {}

    def summary(self, report: dict) -> str:
        return ""

    def profile(self, path: Path, *, runs: int, warmup: int, threads: list[int], progress: bool) -> dict:
        return {}

    def format_profile(self, result: dict) -> str:
        return ""

    def runner(self, path: Path, threads: int) -> tuple[Run, str]:
        raise UnsupportedError(f"{path}: the {self.name} target cannot time single inferences")

    def analyze(self, path: Path) -> dict | None:
        return None

    def probe(self, path: Path, names: list[str]) -> Probe:
        raise UnsupportedError(f"{path}: the {self.name} target cannot expose the tensors of this artifact")

    def integer_graph(self, path: Path) -> Graph | None:
        return None

    def integer_runs(self, path: Path, graph: Graph, inputs: list[list[np.ndarray]]) -> list[IntegerRun]:
        return []

    def arena(self, qdq_model: ir.Model) -> dict | None:
        """The run-time activation memory this target's artifact of QDQ_MODEL (an 8-bit QDQ model, int16 where its
        layers table says) needs, measured: ``{"arena_bytes", "persistent_bytes"}``; None: the target does not
        plan one arena (the mixed-precision search's arena budgets, edgeq.mixed.arena)."""
        return None

    def node_plan(self, model: ir.Model, shared: dict) -> dict | None:
        """What this target's artifact would make of each node of MODEL (a preprocessed float model, left
        unchanged), decided by the rules convert applies, without data: ``{"nodes": [{"node", "op", "outcome",
        "reason"?, "code"?}], "refusal"?}``, outcome "quantized", "float", "integer" (computes no float tensor,
        left as it is) or "refused"; ``refusal``: the one line why convert would refuse the whole artifact.
        SHARED holds what one target computed for others on the same model, and under "exclusions" the nodes
        kept float on request (edgeq.quantization.plan.Exclusions, as ``--exclude``). None: the target does not say."""
        return None


def output_summary(validation: dict) -> str:
    """'<output>: SQNR x dB; ...; accuracy float a, quantized b' of a validation on data."""
    parts = [f"{out}: SQNR {row['sqnr_db']:.1f} dB" for out, row in validation["outputs"].items()]
    if "accuracy" in validation:
        acc = validation["accuracy"]
        parts.append(f"accuracy float {acc['float']:.4f}, quantized {acc['quantized']:.4f}")
    return "; ".join(parts)
