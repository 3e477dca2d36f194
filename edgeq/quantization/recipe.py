"""Recipes: every quantization option in one object that a TOML file can pin.

A recipe file is a TOML table of the same names as the CLI options (underscores or dashes)::

    activation_type = "int8"        # int8 | uint8 | int16 (auto: the target picks what its runtime fuses)
    weight_bits = 8                 # 8 | 4 (4-bit values stored in int8 containers)
    per_channel = true
    weight_range = "mse"            # minmax | mse (per-channel clipping search)
    weight_rounding = "sum-preserving"  # nearest | sum-preserving (keeps each channel's integer sum)
    calib_method = "auto"           # auto (percentile; minmax for int16) | minmax | percentile | entropy | mse
    percentile = 99.99
    exclude = ["head/.*", "Softmax"]
    passes = ["equalize"]           # optional passes: equalize, range-search, adaround, bias-correction (pipeline order)
    bias_correction = "empirical"   # empirical | analytic (data-free, from BatchNorm statistics)
    equalize_clip = "exact"         # Relu6 between equalized layers: exact | to-relu | keep (see passes/equalize.py)
    equalize_scaling = "auto"       # weights | activations | auto (activations for per-channel weights)
    dyadic_bits = 31                # significand width of every requantization multiplier (31: TFLite's own)
    pow2 = false                    # power-of-two scales: every requantization is a pure shift
    max_calib_samples = 512
    input_shapes = { x = [1, 3, 320, 320] }   # fix dynamic input dimensions (default: from the calibration data)
    cpu = "auto"                    # the CPU ONNX Runtime will run on: auto (this machine) | x86-vnni | x86-avx2 | arm64

Options given on the command line override the file.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import RecipeError
from edgeq.quantization.cpus import CPU_CHOICES

CALIB_METHODS = ("auto", "minmax", "percentile", "entropy", "mse")
WEIGHT_RANGES = ("minmax", "mse")
WEIGHT_ROUNDINGS = ("nearest", "sum-preserving")
ACTIVATION_CHOICES = ("int8", "uint8", "int16", "auto")
# The optional passes a recipe lists, in the order the pipeline runs them whatever order they are listed in; each
# is the module edgeq.passes.<name> (dashes as underscores; passes/stage.py says what such a module defines):
# equalize (float model, before calibration) -> calibration -> QDQ -> range-search -> adaround -> bias-correction.
KNOWN_PASSES: tuple[str, ...] = ("equalize", "range-search", "adaround", "bias-correction")
# Every pass module the pipeline asks, in order: dyadic runs last, when dyadic_bits < 31 or pow2.
PASS_ORDER: tuple[str, ...] = (*KNOWN_PASSES, "dyadic")
BIAS_CORRECTIONS = ("empirical", "analytic")
EQUALIZE_CLIPS = ("exact", "to-relu", "keep")
EQUALIZE_SCALINGS = ("auto", "weights", "activations")


_SCALAR_KINDS = {
    "str": (str, "a string"),
    "int": (int, "an integer"),
    "float": ((int, float), "a number"),
    "bool": (bool, "true or false"),
}


@dataclass
class Recipe:
    activation_type: str = "int8"
    weight_bits: int = 8
    per_channel: bool = True
    weight_range: str = "mse"
    weight_rounding: str = "sum-preserving"
    calib_method: str = "auto"
    percentile: float = 99.99
    exclude: list[str] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    bias_correction: str = "empirical"
    equalize_clip: str = "exact"
    equalize_scaling: str = "auto"
    dyadic_bits: int = 31
    pow2: bool = False
    max_calib_samples: int | None = None
    batch_size: int | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    cpu: str = "auto"

    def validate(self) -> Recipe:
        self._check_scalar_types()
        if self.activation_type not in ACTIVATION_CHOICES:
            raise RecipeError(f"activation_type must be one of {', '.join(ACTIVATION_CHOICES)}")
        if self.weight_bits not in (4, 8):
            raise RecipeError("weight_bits must be 8 or 4")
        if self.weight_range not in WEIGHT_RANGES:
            raise RecipeError(f"weight_range must be one of {', '.join(WEIGHT_RANGES)}")
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise RecipeError(f"weight_rounding must be one of {', '.join(WEIGHT_ROUNDINGS)}")
        if self.calib_method not in CALIB_METHODS:
            raise RecipeError(f"calib_method must be one of {', '.join(CALIB_METHODS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise RecipeError("percentile must be in (50, 100]")
        for name in ("passes", "exclude"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
                raise RecipeError(f"{name} must be a list of names, not {value!r}")
        unknown = [p for p in self.passes if p not in KNOWN_PASSES]
        if unknown:
            raise RecipeError(
                f"unknown pass(es): {', '.join(unknown)} (available: {', '.join(KNOWN_PASSES) or 'none yet'})"
            )
        self.passes = [p for p in KNOWN_PASSES if p in self.passes]
        if self.bias_correction not in BIAS_CORRECTIONS:
            raise RecipeError(f"bias_correction must be one of {', '.join(BIAS_CORRECTIONS)}")
        if self.equalize_clip not in EQUALIZE_CLIPS:
            raise RecipeError(f"equalize_clip must be one of {', '.join(EQUALIZE_CLIPS)}")
        if self.equalize_scaling not in EQUALIZE_SCALINGS:
            raise RecipeError(f"equalize_scaling must be one of {', '.join(EQUALIZE_SCALINGS)}")
        if not 1 <= self.dyadic_bits <= 31:
            raise RecipeError("dyadic_bits must be between 1 and 31")
        if self.max_calib_samples is not None and self.max_calib_samples < 1:
            raise RecipeError("max_calib_samples must be at least 1")
        self.input_shapes = _input_shapes(self.input_shapes)
        if self.cpu not in CPU_CHOICES:
            raise RecipeError(f"cpu must be one of {', '.join(CPU_CHOICES)}, not {self.cpu!r}")
        return self

    def _check_scalar_types(self) -> None:
        """Each str, int, float and bool option holds that type (TOML and dicts can give any): an int is no bool,
        a float may be an int. Lists and tables are checked by their own rules below."""
        for option in dataclasses.fields(self):
            value, declared = getattr(self, option.name), str(option.type)
            if value is None and declared.endswith("| None"):
                continue
            kind = declared.removesuffix(" | None")
            if kind not in _SCALAR_KINDS:
                continue
            wanted, description = _SCALAR_KINDS[kind]
            if not isinstance(value, wanted) or (isinstance(value, bool) and kind != "bool"):
                raise RecipeError(f"{option.name} must be {description}, not {value!r}")

    def updated(self, **overrides) -> Recipe:
        """A copy with the options that were actually given (not None) replaced."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **given).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _input_shapes(value) -> dict[str, list[int]]:
    """input name -> a shape of positive ints ("" names the model's only input)."""
    if not isinstance(value, dict):
        raise RecipeError(f"input_shapes must map input names to shapes, not {value!r}")
    shapes = {}
    for name, shape in value.items():
        if not isinstance(shape, list | tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            raise RecipeError(f"input shape of {name or 'the input'!r} must be positive integers, not {shape!r}")
        shapes[str(name)] = list(shape)
    return shapes


def parse_input_shape(text: str) -> tuple[str, list[int]]:
    """``NAME=1,3,320,320`` (or ``1,3,320,320`` for a model with one input) as (name, shape)."""
    name, _, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        shape = []
    if not shape or any(d <= 0 for d in shape):
        raise RecipeError(f"--input-shape {text!r}: expected NAME=1,3,320,320 (positive integers)")
    return name.strip(), shape


def load_recipe(path: str | Path | None) -> Recipe:
    if path is None:
        return Recipe()
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe file {path} is not valid TOML: {exc}") from None
    names = {f.name for f in dataclasses.fields(Recipe)}
    options = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in names:
            raise RecipeError(f"recipe file {path}: unknown option {key!r}")
        options[name] = value
    try:
        return Recipe(**options).validate()
    except (TypeError, RecipeError) as exc:
        raise RecipeError(f"recipe file {path}: {exc}") from None
