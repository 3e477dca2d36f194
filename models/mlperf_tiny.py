"""The four MLPerf Tiny v0.5 reference models, rebuilt in torch from their published descriptions, as int8 .tflite.

Architectures (Banbury et al., "MLPerf Tiny Benchmark", NeurIPS Datasets and Benchmarks 2021, section 4, and the
training scripts of github.com/mlcommons/tiny, benchmark/training/*), batch 1, NCHW in torch:

* ``resnet8`` image classification (CIFAR-10, 3x32x32): a 3x3 conv (16), then three residual stacks of two 3x3
  convs (16, 32, 64 filters; the second and third stacks start with stride 2 and have a 1x1 stride-2 projection
  shortcut), each conv followed by BatchNorm and ReLU (after the residual add), 8x8 average pooling, a 10-way dense
  layer and softmax.
* ``ds_cnn`` keyword spotting (49 MFCC frames x 10 coefficients): a 10x4 stride-2 conv (64), four depthwise
  separable blocks (3x3 depthwise + 1x1 pointwise, 64 channels, BatchNorm + ReLU after each), average pooling
  over the 25x5 map, a 12-way dense layer and softmax (Zhang et al. 2017, "Hello Edge", DS-CNN-S).
* ``mobilenet_v1_025`` visual wake words (3x96x96): MobileNetV1 with width multiplier 0.25 (Howard et al. 2017):
  a 3x3 stride-2 conv (8) and 13 depthwise separable blocks (16, 32, 32, 64, 64, 128, 128 x5, 256, 256 channels,
  stride 2 at blocks 2, 4, 6 and 12), global average pooling, a 2-way dense layer and softmax.
* ``fc_autoencoder`` anomaly detection (640 = 5 frames x 128 log-mel bins): dense layers 128, 128, 128, 128, 8,
  128, 128, 128, 128 (each with BatchNorm and ReLU) and a 640-wide linear output.

Convolutions have the output sizes of Keras' ``padding="same"``, but torch pads symmetrically: where SAME pads
asymmetrically (stride 2 on an even size, DS-CNN's 10x4 kernel) the conv pads the larger side on both, and edgeq's
.tflite gets a PAD operator in front of a VALID conv (2 in ResNet-8, 5 in MobileNetV1, 1 in DS-CNN) where the
reference models have a SAME conv. The MACs are those of the reference; the PADs add a copy of the padded input.
(An explicit asymmetric ``F.pad`` exports through ConstantOfShape, which the TFLite target does not lower.)

The weights are random and the models are calibrated on random normal data (a loud-warning case anywhere else in
edgeq): TFLite Micro's latency depends on the shapes, not on the values, so these models serve latency and memory
estimates only. Published latencies: the MLPerf Tiny v0.5 reference submission (TFLite Micro on the NUCLEO-L4R5ZI,
a Cortex-M4F at 120 MHz), as quoted by the MLPerf Tiny paper, table 4.

Checked against the published descriptions (the MLPerf Tiny paper's table of the four benchmarks): MACs ResNet-8 12.50M (published
~12.5M), DS-CNN 2.66M (~2.7M), MobileNetV1-0.25 VWW 7.49M (~7.5M), autoencoder 0.264M (~0.26M); parameters
of the int8 .tflite (BatchNorm folded) 77.7k, 22.6k, 211k and 266k.

``python -m models.mlperf_tiny`` builds the four .tflite files and prints their analysis, edgeq.targets.tflm.mcu's derived
Cortex-M4 cycles, the ratio of the published cycles to them, the Cortex-M4F estimate against the published
latency, and the fit of edgeq.targets.tflm.mcu's two factors (``fit_factors``) on the two ``FIT`` models.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

# MLPerf Tiny v0.5 reference submission, TFLite Micro on a Cortex-M4F at 120 MHz (milliseconds).
PUBLISHED_LATENCY_MS = {
    "resnet8": 704.0,
    "ds_cnn": 182.0,
    "mobilenet_v1_025": 600.0,
    "fc_autoencoder": 10.0,
}


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) along one axis: the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Module):
    """Conv2d + BatchNorm (+ ReLU) with Keras' SAME padding for a fixed input size."""

    def __init__(self, cin, cout, kernel, stride, size, *, groups=1, relu=True):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        (top, bottom), (left, right) = _same_pads(size[0], kh, sh), _same_pads(size[1], kw, sw)
        # torch pads symmetrically: the larger of SAME's two pads gives the same output size
        self.conv = nn.Conv2d(
            cin,
            cout,
            (kh, kw),
            (sh, sw),
            padding=(max(top, bottom), max(left, right)),
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu
        self.out_size = (-(-size[0] // sh), -(-size[1] // sw))

    def forward(self, x):
        y = self.bn(self.conv(x))
        return F.relu(y) if self.relu else y


class ResNet8(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = SameConv(3, 16, 3, 1, (32, 32))
        self.stacks = nn.ModuleList()
        cin, size = 16, (32, 32)
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            first = SameConv(cin, cout, 3, stride, size)
            second = SameConv(cout, cout, 3, 1, first.out_size, relu=False)
            shortcut = SameConv(cin, cout, 1, stride, size, relu=False) if stride > 1 else None
            self.stacks.append(
                nn.ModuleDict(
                    {"first": first, "second": second, **({"shortcut": shortcut} if shortcut else {})}
                )
            )
            cin, size = cout, first.out_size
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        y = self.stem(x)
        for stack in self.stacks:
            shortcut = stack["shortcut"](y) if "shortcut" in stack else y
            y = F.relu(stack["second"](stack["first"](y)) + shortcut)
        y = F.avg_pool2d(y, 8).flatten(1)
        return F.softmax(self.fc(y), dim=-1)


class DSCNN(nn.Module):
    def __init__(self, classes: int = 12, channels: int = 64):
        super().__init__()
        self.stem = SameConv(1, channels, (10, 4), (2, 2), (49, 10))
        size = self.stem.out_size
        self.blocks = nn.Sequential(
            *[
                nn.Sequential(
                    SameConv(channels, channels, 3, 1, size, groups=channels),
                    SameConv(channels, channels, 1, 1, size),
                )
                for _ in range(4)
            ]
        )
        self.fc = nn.Linear(channels, classes)
        self.pool = size

    def forward(self, x):
        y = self.blocks(self.stem(x))
        y = F.avg_pool2d(y, self.pool).flatten(1)
        return F.softmax(self.fc(y), dim=-1)


class MobileNetV1(nn.Module):
    # (output channels at width 1.0, stride) of the 13 depthwise separable blocks (Howard et al. 2017, table 1)
    BLOCKS = (
        (64, 1),
        (128, 2),
        (128, 1),
        (256, 2),
        (256, 1),
        (512, 2),
        *[(512, 1)] * 5,
        (1024, 2),
        (1024, 1),
    )

    def __init__(self, alpha: float = 0.25, size: int = 96, classes: int = 2):
        super().__init__()
        cin = int(32 * alpha)
        self.stem = SameConv(3, cin, 3, 2, (size, size))
        spatial = self.stem.out_size
        layers = []
        for width, stride in self.BLOCKS:
            cout = int(width * alpha)
            depthwise = SameConv(cin, cin, 3, stride, spatial, groups=cin)
            layers += [depthwise, SameConv(cin, cout, 1, 1, depthwise.out_size)]
            cin, spatial = cout, depthwise.out_size
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)
        self.pool = spatial

    def forward(self, x):
        y = self.blocks(self.stem(x))
        y = F.avg_pool2d(y, self.pool).flatten(1)
        return F.softmax(self.fc(y), dim=-1)


class FCAutoencoder(nn.Module):
    def __init__(self, inputs: int = 640, hidden: int = 128, bottleneck: int = 8):
        super().__init__()
        widths = [inputs, hidden, hidden, hidden, hidden, bottleneck, hidden, hidden, hidden, hidden]
        self.hidden = nn.Sequential(
            *[
                nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU())
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            ]
        )
        self.out = nn.Linear(hidden, inputs)

    def forward(self, x):
        return self.out(self.hidden(x))


MODELS = {
    "resnet8": (ResNet8, (1, 3, 32, 32)),
    "ds_cnn": (DSCNN, (1, 1, 49, 10)),
    "mobilenet_v1_025": (MobileNetV1, (1, 3, 96, 96)),
    "fc_autoencoder": (FCAutoencoder, (1, 640)),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The model NAME with random weights (and random BatchNorm statistics), in eval mode, and an example input."""
    factory, shape = MODELS[name]
    torch.manual_seed(seed)
    module = factory().eval()
    for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)):
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    return module, (torch.randn(shape),)


def tflite_model(name: str, folder: Path | None = None, samples: int = 16) -> bytes:
    """NAME exported to ONNX, calibrated on random data, quantized (int8) and lowered to a .tflite (bytes)."""
    from edgeq.api.export import export_module
    from edgeq.data import ArrayData, input_specs
    from edgeq.io.onnx_model import load_model
    from edgeq.pipeline import Pipeline
    from edgeq.quantization.recipe import Recipe
    from edgeq.targets.tflite.lower import lower
    from edgeq.tflite_format.flatbuffer import write

    module, example = build(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(folder or tmp) / f"{name}.onnx"
        export_module(
            module, example, path, input_names=["input"], output_names=["output"], dynamic_batch=False
        )
        model = load_model(path)
    shape = (samples, *MODELS[name][1][1:])
    data = ArrayData(
        {"input": np.random.default_rng(0).standard_normal(shape).astype(np.float32)},
        input_specs(model),
        "random calibration data (latency only)",
    )
    qdq, _ = Pipeline(Recipe(), progress=False).run(model, data, "int8")
    return write(lower(qdq).graph)


# The fit of edgeq.targets.tflm.mcu's two Cortex-M4F factors (its docstring says how the pair was chosen).
FIT = ("resnet8", "fc_autoencoder")


def derived_cycles(analysis: dict) -> tuple[float, float]:
    """(FULLY_CONNECTED, every other operator) derived Cortex-M4 cycles of ANALYSIS, edgeq.targets.tflm.mcu's counts."""
    from edgeq.targets.tflm.mcu import derived_cycles as layer_cycles

    fc = other = 0.0
    for layer in analysis["layers"]:
        cycles = sum(layer_cycles(layer))
        if layer["kind"] == "fully_connected":
            fc += cycles
        else:
            other += cycles
    return fc, other


def fit_factors(analyses: dict[str, dict], clock_hz: float = 120e6) -> tuple[float, float]:
    """(factor, fc_factor) with which the two FIT models' estimates equal their published latencies."""
    rows = [derived_cycles(analyses[name])[::-1] for name in FIT]
    measured = [PUBLISHED_LATENCY_MS[name] * 1e-3 * clock_hz for name in FIT]
    factor, fc_factor = np.linalg.solve(np.array(rows), np.array(measured))
    return float(factor), float(fc_factor)


def main() -> None:
    from edgeq.targets.tflite.analysis import analyze_tflite
    from edgeq.targets.tflm.mcu import PROFILES, estimate
    from edgeq.tflite_format.flatbuffer import read

    analyses = {name: analyze_tflite(read(tflite_model(name))) for name in MODELS}
    print(
        f"{'model':<18} {'MACs':>11} {'params':>9} {'peak act B':>11} {'derived Mcyc':>13} {'measured/derived':>17} "
        f"{'published ms':>13} {'M4F est ms':>11} {'error':>7}"
    )
    for name, analysis in analyses.items():
        s = analysis["summary"]
        derived = sum(derived_cycles(analysis))
        ms = estimate(analysis, PROFILES["cortex-m4f"])["latency_ms"]
        published = PUBLISHED_LATENCY_MS[name]
        role = "fit" if name in FIT else "held back"
        print(
            f"{name:<18} {s['macs']:>11,} {s['params']:>9,} {s['peak_activation_bytes']:>11,} {derived / 1e6:>13.2f} "
            f"{published * 120e3 / derived:>17.2f} {published:>13.1f} {ms:>11.1f} {ms / published - 1:>+7.1%}  {role}"
        )
    factor, fc_factor = fit_factors(analyses)
    print(
        f"fit on {' + '.join(FIT)}: factor {factor:.3f}, fc_factor {fc_factor:.3f} (targets/tflm/mcu.py's constants)"
    )


if __name__ == "__main__":
    main()
