"""Recipes: every quantization option in one object that a TOML file can pin.

A recipe file is a TOML table of the same names as the CLI options (underscores or dashes)::

    activation_type = "int8"        # int8 | uint8 | int16 (auto: the target picks what its runtime fuses)
    weight_bits = 8                 # 8 | 4 (packed as INT4 in ONNX Runtime's model, int8 containers elsewhere)
    per_channel = true
    weight_range = "mse"            # minmax | mse (per-channel clipping search)
    weight_rounding = "sum-preserving"  # nearest | sum-preserving (keeps each channel's integer sum)
    calib_method = "auto"           # auto (percentile; minmax for int16) | minmax | percentile | entropy | mse
    percentile = 99.99
    exclude = ["head/.*", "Softmax"]
    layers = { "conv_12" = "int4", "Conv" = "int8", "head/.*" = "float" }  # per node: float | int8 | int4 weights
                                    # | int16 (activations, 16x8) (first matching key wins;
                                    # edgeq.quantization.layer_precision)
    passes = ["equalize"]           # optional passes: equalize, range-search, adaround, bias-correction (pipeline order)
    bias_correction = "empirical"   # empirical | analytic (data-free, from BatchNorm statistics)
    equalize_clip = "exact"         # Relu6 between equalized layers: exact | to-relu | keep (see passes/equalize.py)
    equalize_scaling = "auto"       # weights | activations | auto (activations for per-channel weights)
    smooth_quant_alpha = "auto"     # auto (searched on the calibration data) | a number in [0, 1]
    smooth_quant_shared = "skip"    # skip | copy (a LayerNorm output also read elsewhere: copy the LayerNorm)
    dyadic_bits = 31                # significand width of every requantization multiplier (31: TFLite's own)
    pow2 = false                    # power-of-two scales: every requantization is a pure shift
    max_calib_samples = 512
    input_shapes = { x = [1, 3, 320, 320] }   # fix dynamic input dimensions (default: from the calibration data)
    cpu = "auto"                    # the CPU ONNX Runtime will run on: auto (this machine) | x86-vnni | x86-avx2 | arm64
    mode = "auto"                   # auto | static | dynamic (ONNX Runtime only: activations quantized per run)

Options given on the command line override the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import RecipeError, first_line
from edgeq.quantization.cpus import CPU_CHOICES
from edgeq.quantization.layer_precision import LAYER_PRECISIONS, PRECISION_BITS

CALIB_METHODS = ("auto", "minmax", "percentile", "entropy", "mse")
WEIGHT_RANGES = ("minmax", "mse")
WEIGHT_ROUNDINGS = ("nearest", "sum-preserving")
ACTIVATION_CHOICES = ("int8", "uint8", "int16", "auto")
# The optional passes a recipe lists, in the order the pipeline runs them whatever order they are listed in; each
# is the module edgeq.passes.<name> (dashes as underscores; passes/stage.py says what such a module defines):
# equalize -> smooth-quant (float model, before calibration) -> calibration -> QDQ -> range-search -> adaround
# -> bias-correction.
KNOWN_PASSES: tuple[str, ...] = ("equalize", "smooth-quant", "range-search", "adaround", "bias-correction")
# Every pass module the pipeline asks, in order: dyadic runs last, when dyadic_bits < 31 or pow2.
PASS_ORDER: tuple[str, ...] = (*KNOWN_PASSES, "dyadic")
# static: calibrated Q/DQ on activations and weights; dynamic: int8 weights, activations quantized per run (ONNX
# Runtime only); auto: static, except that the onnxruntime target builds both for a transformer and keeps the one
# with the smaller measured output error.
MODES = ("auto", "static", "dynamic")
STATIC_ONLY_PASSES = ("range-search", "adaround", "bias-correction")
BIAS_CORRECTIONS = ("empirical", "analytic")
EQUALIZE_CLIPS = ("exact", "to-relu", "keep")
EQUALIZE_SCALINGS = ("auto", "weights", "activations")
SMOOTH_QUANT_SHARED = ("skip", "copy")


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
    layers: dict[str, str] = field(default_factory=dict)
    passes: list[str] = field(default_factory=list)
    bias_correction: str = "empirical"
    equalize_clip: str = "exact"
    equalize_scaling: str = "auto"
    smooth_quant_alpha: str | float = "auto"
    smooth_quant_shared: str = "skip"
    dyadic_bits: int = 31
    pow2: bool = False
    max_calib_samples: int | None = None
    batch_size: int | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    cpu: str = "auto"
    mode: str = "auto"

    def validate(self) -> Recipe:
        self._check_scalar_types()
        if self.activation_type not in ACTIVATION_CHOICES:
            raise RecipeError(f"activation_type must be one of {', '.join(ACTIVATION_CHOICES)}, not {self.activation_type!r}")
        if self.weight_bits not in (4, 8):
            raise RecipeError(f"weight_bits must be 8 or 4, not {self.weight_bits!r}")
        _check_choice("weight_range", self.weight_range, WEIGHT_RANGES)
        _check_choice("weight_rounding", self.weight_rounding, WEIGHT_ROUNDINGS)
        _check_choice("calib_method", self.calib_method, CALIB_METHODS)
        if not 50.0 < self.percentile <= 100.0:  # NaN fails this too
            raise RecipeError(f"percentile must be in (50, 100], not {self.percentile!r}")
        for name in ("passes", "exclude"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
                raise RecipeError(f"{name} must be a list of names, not {value!r}")
        if "" in self.exclude:  # an empty name would match every unnamed node
            raise RecipeError("exclude lists an empty name")
        _check_layers(self.layers)
        unknown = [p for p in self.passes if p not in KNOWN_PASSES]
        if unknown:
            raise RecipeError(
                f"unknown pass(es): {', '.join(unknown)}{_suggestion(unknown[0], KNOWN_PASSES)} "
                f"(available: {', '.join(KNOWN_PASSES)})"
            )
        twice = [p for p in KNOWN_PASSES if self.passes.count(p) > 1]
        if twice:
            raise RecipeError(f"passes lists {twice[0]!r} twice")
        self.passes = [p for p in KNOWN_PASSES if p in self.passes]
        _check_choice("bias_correction", self.bias_correction, BIAS_CORRECTIONS)
        _check_choice("equalize_clip", self.equalize_clip, EQUALIZE_CLIPS)
        _check_choice("equalize_scaling", self.equalize_scaling, EQUALIZE_SCALINGS)
        alpha = self.smooth_quant_alpha
        if alpha != "auto" and not (isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 <= alpha <= 1):
            raise RecipeError(f'smooth_quant_alpha must be "auto" or a number in [0, 1], not {alpha!r}')
        _check_choice("smooth_quant_shared", self.smooth_quant_shared, SMOOTH_QUANT_SHARED)
        if not 1 <= self.dyadic_bits <= 31:
            raise RecipeError(f"dyadic_bits must be between 1 and 31, not {self.dyadic_bits!r}")
        for name in ("max_calib_samples", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise RecipeError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        self.input_shapes = _input_shapes(self.input_shapes)
        _check_choice("cpu", self.cpu, CPU_CHOICES)
        _check_choice("mode", self.mode, MODES)
        if self.mode == "dynamic":
            self._check_dynamic()
        return self

    def _check_dynamic(self) -> None:
        """Dynamic quantization has no calibrated activations: what works on them does not apply."""
        if self.activation_type == "int16":
            raise RecipeError("mode dynamic quantizes activations to uint8 at run time: it takes no int16 activations")
        if self.weight_bits != 8:
            raise RecipeError("mode dynamic takes 8-bit weights (MatMulInteger), not weight_bits 4")
        int16 = [key for key, precision in self.layers.items() if precision == "int16"]
        if int16:
            raise RecipeError(
                f"mode dynamic quantizes activations to uint8 at run time, not layers {int16[0]!r} = int16"
            )
        four_bit = [key for key, precision in self.layers.items() if precision == "int4"]
        if four_bit:
            raise RecipeError(f"mode dynamic takes 8-bit weights (MatMulInteger), not layers {four_bit[0]!r} = int4")
        static_only = [p for p in self.passes if p in STATIC_ONLY_PASSES]
        if static_only:
            raise RecipeError(f"pass {static_only[0]} works on calibrated activations: it does not apply to mode dynamic")

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

    @property
    def int16_layers(self) -> bool:
        """Whether some layers compute with int16 activations (the QDQ model then needs opset 21)."""
        return self.activation_type != "int16" and "int16" in self.layers.values()

    @property
    def widest_weight_bits(self) -> int:
        """The most bits any layer's weights get (weight_bits, or a wider layers entry)."""
        return max([self.weight_bits, *(PRECISION_BITS.get(p, 0) for p in self.layers.values())])

    def updated(self, **overrides) -> Recipe:
        """A copy with the options that were actually given (not None) replaced."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **given).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RecipeError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _check_layers(table) -> None:
    """The layers table: node patterns (non-empty strings) mapped to one of LAYER_PRECISIONS."""
    if not isinstance(table, dict):
        raise RecipeError(f"layers must be a table of node patterns and precisions, not {table!r}")
    for key, precision in table.items():
        if not isinstance(key, str) or not key:  # an empty pattern would match every unnamed node
            raise RecipeError(f"layers has an empty key {key!r}: give a node name, an op type or a regex")
        if precision not in LAYER_PRECISIONS:
            raise RecipeError(
                f"layers key {key!r}: precision must be one of {', '.join(LAYER_PRECISIONS)}, not {precision!r}"
            )


def parse_layer(text: str) -> tuple[str, str]:
    """``PATTERN=PRECISION`` (``--layer``) as (pattern, precision); the pattern may itself hold '='."""
    pattern, sep, precision = text.rpartition("=")
    if not sep or not pattern:
        raise RecipeError(f"--layer {text!r}: expected PATTERN=PRECISION, e.g. conv_12=int4")
    _check_layers({pattern: precision.strip()})
    return pattern, precision.strip()


def _suggestion(name: str, names) -> str:
    """' (did you mean 'X'?)' for the one of NAMES closest to a mistyped NAME, or ''."""
    normal = {n.replace("_", "-"): n for n in names}
    close = difflib.get_close_matches(name.lower().replace("_", "-"), list(normal), 1)
    return f" (did you mean {normal[close[0]]!r}?)" if close else ""


def _input_shapes(value) -> dict[str, list[int]]:
    """input name -> a shape of positive ints ("" names the model's only input)."""
    if not isinstance(value, dict):
        raise RecipeError(f"input_shapes must map input names to shapes, not {value!r}")
    shapes = {}
    for name, shape in value.items():
        if not isinstance(shape, list | tuple) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            raise RecipeError(f"input shape of {name or 'the input'!r} must be positive integers, not {shape!r}")
        shapes[str(name)] = list(shape)
    return shapes


def parse_input_shape(text: str) -> tuple[str, list[int]]:
    """``NAME=1,3,320,320`` (or ``1,3,320,320`` for a model with one input) as (name, shape)."""
    name, _, dims = text.rpartition("=")
    try:  # every dimension given: '1,,3' or '1,x,3' is a typo, not [1, 3]
        shape = [int(d) for d in dims.replace("x", ",").split(",")]
    except ValueError:
        shape = []
    if not shape or any(d <= 0 for d in shape):
        raise RecipeError(f"--input-shape {text!r}: expected NAME=1,3,320,320 (positive integers)")
    return name.strip(), shape


# CLI flags that are no recipe key, and what a recipe writes instead.
_CLI_ONLY = {"per_tensor": "per_channel = false", "input_shape": "input_shapes"}
# Options that configure one pass: a recipe file that sets one without listing its pass is contradicting itself.
_PASS_OPTIONS = {
    "bias_correction": "bias-correction",
    "equalize_clip": "equalize",
    "equalize_scaling": "equalize",
    "smooth_quant_alpha": "smooth-quant",
    "smooth_quant_shared": "smooth-quant",
}


def load_recipe(path: str | Path | None) -> Recipe:
    if path is None:
        return Recipe()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        table = tomllib.loads(text)
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe file {path} is not valid TOML: {first_line(exc)}") from None
    except OSError as exc:
        raise RecipeError(f"recipe file {path} cannot be read: {exc.strerror or exc}") from None
    if not text.strip():
        raise RecipeError(f"recipe file {path} is empty (for every default, give no --recipe)")
    names = [f.name for f in dataclasses.fields(Recipe)]
    options = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in names:
            hint = f" (did you mean {_CLI_ONLY[name]!r}?)" if name in _CLI_ONLY else _suggestion(name, names)
            raise RecipeError(f"recipe file {path}: unknown option {key!r}{hint}")
        if name in options:
            raise RecipeError(f"recipe file {path}: option {name} is given twice ({key!r} and another spelling)")
        options[name] = value
    try:
        recipe = Recipe(**options).validate()
    except (TypeError, RecipeError) as exc:
        raise RecipeError(f"recipe file {path}: {exc}") from None
    for name, needed in _PASS_OPTIONS.items():
        if name in options and needed not in recipe.passes:
            raise RecipeError(f"recipe file {path}: {name} is set but passes does not list {needed!r}")
    if "percentile" in options and recipe.calib_method not in ("percentile", "auto"):
        raise RecipeError(
            f"recipe file {path}: percentile is used only by calib_method percentile or auto, not {recipe.calib_method!r}"
        )
    return recipe
