"""edgeq export: torch -> one checked ONNX file, with clear errors for bad factories."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeq.api.export import export_factory, export_module
from edgeq.errors import EdgeqError
from edgeq.io.session import session as ort_session


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).mean((2, 3))


def tiny_factory():  # "test_export:tiny_factory"
    torch.manual_seed(0)
    return Tiny().eval(), (torch.randn(1, 3, 6, 6),)


def module_only():
    return Tiny().eval()


def not_a_module():
    return 42


class Unfaithful(nn.Module):
    """Python-side randomness: the traced graph freezes one draw, so the ONNX differs from torch."""

    def forward(self, x):
        return x + torch.rand(1).item()


def test_export_single_file_dynamic_batch_opset(tmp_path):
    module, example = tiny_factory()
    out = tmp_path / "tiny.onnx"
    result = export_module(module, example, out)
    assert result["opset"] == 17 and result["max_abs_error"] < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]  # no .onnx.data beside it
    model = onnx.load(out)
    assert "BatchNormalization" in [n.op_type for n in model.graph.node]
    x = np.random.default_rng(0).normal(size=(5, 3, 6, 6)).astype(np.float32)
    got = ort_session(out).run(None, {"input": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, module(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_export_factory_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).parent)
    assert export_factory("test_export:tiny_factory", tmp_path / "a.onnx")["opset"] == 17
    assert (
        export_factory("test_export:module_only", tmp_path / "b.onnx", input_shape="2,3,5,5")["opset"] == 17
    )
    with pytest.raises(EdgeqError, match="no example input"):
        export_factory("test_export:module_only", tmp_path / "c.onnx")
    with pytest.raises(EdgeqError, match="did not return a torch.nn.Module"):
        export_factory("test_export:not_a_module", tmp_path / "c.onnx")
    with pytest.raises(EdgeqError, match="not of the form"):
        export_factory("no_colon", tmp_path / "c.onnx")
    with pytest.raises(EdgeqError, match="cannot import"):
        export_factory("missing_module_xyz:f", tmp_path / "c.onnx")
    with pytest.raises(EdgeqError, match="list of integers"):
        export_factory("test_export:module_only", tmp_path / "c.onnx", input_shape="a,b")
    assert not (tmp_path / "c.onnx").exists()


def test_numerics_check_refuses_an_unfaithful_export(tmp_path):
    out = tmp_path / "u.onnx"
    with pytest.raises(EdgeqError, match="differs from torch"):
        export_module(Unfaithful(), (torch.zeros(1, 3),), out)
    assert not out.exists()
