"""``edgeq export``: a PyTorch module -> one self-contained ONNX file, checked against torch.

torch 2.13's ``torch.onnx.export`` defaults to the dynamo exporter, which may emit a newer opset than asked for
and writes weights to a separate ``.onnx.data`` file. edgeq uses the TorchScript exporter (``dynamo=False``),
which honours the opset, keeps BatchNorm nodes when asked (edgeq folds them itself and keeps their statistics)
and needs no external data below 2 GB; it exports into a temporary folder, loads the result back through
edgeq.io.onnx_model (opset check included), saves one file atomically and then runs it in onnxruntime on the
example input and on a second random input, refusing the export if the outputs differ from torch by more than
``atol + rtol * |torch|``.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from edgeq.data import load_callable
from edgeq.errors import EdgeqError, ModelError, RecipeError
from edgeq.io.files import check_output_path
from edgeq.io.onnx_model import load_model, save_model
from edgeq.io.session import session


def _torch():
    try:
        import torch
    except ImportError:
        raise EdgeqError("edgeq export needs PyTorch: pip install 'edgeq[torch]'") from None
    return torch


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise RecipeError(f"--input-shape {text!r} is not a list of integers like 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise RecipeError(f"--input-shape {text!r} must have positive dimensions")
    return shape


def export_module(
    module,
    example_inputs: tuple,
    output: str | Path,
    *,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    opset: int = 17,
    dynamic_batch: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> dict:
    """Export MODULE (eval mode) traced on EXAMPLE_INPUTS (a tensor or a tuple of them) to OUTPUT; returns the
    numeric check."""
    torch = _torch()
    example_inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    out = check_output_path(output)
    module = module.eval()
    input_names = input_names or (
        ["input"] if len(example_inputs) == 1 else [f"input_{i}" for i in range(len(example_inputs))]
    )
    with torch.no_grad():
        reference = module(*example_inputs)
    n_outputs = len(reference) if isinstance(reference, tuple | list) else 1
    output_names = output_names or (
        ["output"] if n_outputs == 1 else [f"output_{i}" for i in range(n_outputs)]
    )
    dynamic_axes = {name: {0: "N"} for name in [*input_names, *output_names]} if dynamic_batch else None
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    module,
                    example_inputs,
                    str(raw),
                    dynamo=False,
                    opset_version=opset,
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_axes=dynamic_axes,
                    training=torch.onnx.TrainingMode.EVAL,
                    do_constant_folding=False,
                )
            except Exception as exc:  # the exporter raises many unrelated types for unsupported modules
                raise ModelError(f"torch.onnx.export failed: {str(exc).strip().splitlines()[0]}") from None
        model = load_model(raw)
    save_model(model, out)
    check = _check_numerics(module, example_inputs, out, input_names, rtol, atol, torch)
    return {"opset": model.opset_imports[""], "max_abs_error": check}


def _check_numerics(module, example_inputs, path: Path, input_names, rtol, atol, torch) -> float:
    runner = session(path)
    generator = torch.Generator().manual_seed(0)
    trials = [
        example_inputs,
        tuple(
            torch.randn(x.shape, generator=generator, dtype=x.dtype) if x.is_floating_point() else x
            for x in example_inputs
        ),
    ]
    worst = 0.0
    for inputs in trials:
        with torch.no_grad():
            expected = module(*inputs)
        expected = [t.numpy() for t in (expected if isinstance(expected, tuple | list) else (expected,))]
        got = runner.run(None, {n: x.numpy() for n, x in zip(input_names, inputs, strict=True)})
        for e, g in zip(expected, got, strict=True):
            err = np.abs(e - g)
            worst = max(worst, float(err.max(initial=0.0)))
            if np.any(err > atol + rtol * np.abs(e)):
                path.unlink(missing_ok=True)
                raise ModelError(f"exported model differs from torch by up to {float(err.max()):.3g}")
    return worst


def export_factory(
    spec: str,
    output: str | Path,
    *,
    input_shape: str | None = None,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> dict:
    """Export the module made by the factory SPEC ('module:function'), which returns a module or
    (module, example_inputs); without example inputs, INPUT_SHAPE gives a float32 example."""
    torch = _torch()
    made = load_callable(spec)()
    module, example = made if isinstance(made, tuple) else (made, None)
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{spec} did not return a torch.nn.Module")
    if input_shape:
        example = (torch.randn(_parse_shape(input_shape), generator=torch.Generator().manual_seed(0)),)
    if example is None:
        raise RecipeError(f"{spec} returned no example input: pass --input-shape")
    example = example if isinstance(example, tuple) else (example,)
    return export_module(module, example, output, opset=opset, dynamic_batch=dynamic_batch)
