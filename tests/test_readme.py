"""The README's Python API example, run as written (in a scratch folder that sees the repository's models/)."""

from __future__ import annotations

import os
import re

import pytest
from conftest import REPO


def _python_api_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_python_api_example_runs(tmp_path, monkeypatch, capsys):
    (tmp_path / "models").symlink_to(REPO / "models")
    monkeypatch.chdir(tmp_path)
    exec(compile(_python_api_example(), "README.md (Python API)", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    assert (tmp_path / "out" / "api" / "digits_cnn_model_data.cc").is_file()
    assert (tmp_path / "out" / "api" / "digits.qdq.onnx").is_file()
    assert "True" in printed[0] and "bias-correction" in printed[1]
    assert printed[-1].startswith("calibration data: input 'input' has dtype float64")
    assert os.listdir(tmp_path / "out" / "api")


def test_the_package_offers_the_whole_api():
    import edgeq
    import edgeq.api

    assert set(edgeq.API) == set(edgeq.api.__all__)
    assert all(getattr(edgeq, name) is getattr(edgeq.api, name) for name in edgeq.API)
