"""Hostile calibration and evaluation data: broken .npz files, image folders, module:function sources and
--image-spec strings are refused with exit 2 and one line naming the source and what is wrong, before anything
is written (tests/hostile.py states the contract). Pickled payloads are refused without being unpickled."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hostile import DIGITS, DIGITS_CALIB, DIGITS_TEST, Sandbox, edgeq_process

X = np.load(DIGITS_CALIB)["input"][:16]  # [16, 1, 8, 8] float32: the digits model's input


def _npz(t: Path, compressed: bool = False, **arrays) -> Path:
    path = t / "data.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def _raw(t: Path, name: str, content: bytes) -> Path:
    path = t / name
    path.write_bytes(content)
    return path


def _member_npz(t: Path, member: str, content: bytes, compression=zipfile.ZIP_STORED) -> Path:
    path = t / "data.npz"
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr(member, content)
    return path


class Payload:
    """Unpickling this writes a marker file: a refused pickle must leave no marker."""

    def __reduce__(self):
        return (Path.write_text, (Path("unpickled.marker"), "the payload ran"))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _claims_more_rows(t: Path, compressed: bool) -> Path:
    """An .npz whose member header says 1600 samples where 16 are stored."""
    header = _npy_bytes(X).replace(b"(16, 1, 8, 8)", b"(1600, 1, 8, 8)", 1)
    kind = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    return _member_npz(t, "input.npy", header[: len(header) - X.nbytes] + X.tobytes(), kind)


def _nan_late(t: Path) -> Path:
    x = np.concatenate([X] * 4)
    x[-1, 0, 7, 7] = np.nan
    return _npz(t, compressed=True, input=x)


NPZ = {
    "npz-missing-file": (lambda t: t / "nope.npz", "data file .*nope.npz does not exist"),
    "npz-empty-archive": (lambda t: _npz(t), "missing key\\(s\\) 'input'"),
    "npz-corrupt-zip": (lambda t: _raw(t, "data.npz", b"PK\x03\x04" + b"\x00garbage" * 20), "is not an .npz file"),
    "npz-text-file": (lambda t: _raw(t, "data.npz", b"input,1,2,3\n"), "is not an .npz file"),
    "npz-empty-file": (lambda t: _raw(t, "data.npz", b""), "is not an .npz file"),
    "npz-truncated-archive": (
        lambda t: _raw(t, "cut.npz", _npz(t, input=X).read_bytes()[:2000]),
        "is not an .npz file",
    ),
    "npz-stored-member-truncated": (lambda t: _claims_more_rows(t, False), "is truncated"),
    "npz-compressed-member-truncated": (lambda t: _claims_more_rows(t, True), "is truncated"),
    "npz-member-not-npy": (lambda t: _member_npz(t, "input.npy", b"not an npy header"), "'input' cannot be read"),
    "npz-dtype-float64": (lambda t: _npz(t, input=X.astype(np.float64)), "'input' has dtype float64.*astype"),
    "npz-dtype-int8": (lambda t: _npz(t, input=X.astype(np.int8)), "'input' has dtype int8"),
    "npz-dtype-bool": (lambda t: _npz(t, input=X > 0), "'input' has dtype bool"),
    "npz-dtype-complex": (lambda t: _npz(t, input=X.astype(np.complex64)), "'input' has dtype complex64"),
    "npz-dtype-string": (lambda t: _npz(t, input=np.array(["a", "b"])), "'input' has dtype <U1"),
    "npz-rank-too-low": (lambda t: _npz(t, input=X[:, 0]), "'input' has shape \\[16, 8, 8\\].*rank 4"),
    "npz-rank-too-high": (lambda t: _npz(t, input=X[:, None]), "rank 4"),
    "npz-scalar": (lambda t: _npz(t, input=np.float32(1.0)), "'input' has shape \\[\\]"),
    "npz-wrong-shape": (lambda t: _npz(t, input=X[:, :, :4]), "axis 2 must be 8"),
    "npz-samples-on-wrong-axis": (lambda t: _npz(t, input=X.transpose(1, 0, 2, 3)), "axis 1 must be 1"),
    "npz-missing-input-name": (lambda t: _npz(t, pixels=X), "missing key\\(s\\) 'input'.*input names: input"),
    "npz-wrong-case-name": (lambda t: _npz(t, Input=X), "missing key\\(s\\) 'input'"),
    "npz-zero-samples": (lambda t: _npz(t, input=X[:0]), "has zero samples"),
    "npz-zero-samples-compressed": (lambda t: _npz(t, compressed=True, input=X[:0]), "has zero samples"),
    "npz-nan": (lambda t: _npz(t, input=np.where(X > 0.5, np.nan, X).astype(np.float32)), "NaN or Inf"),
    "npz-minus-inf": (lambda t: _npz(t, input=np.full_like(X, -np.inf)), "NaN or Inf"),
    "npz-nan-in-the-last-sample": (_nan_late, "NaN or Inf"),
    "npz-object-array": (
        lambda t: _npz(t, input=np.array([Payload(), Payload()], dtype=object)),
        "'input' cannot be read \\(Object arrays cannot be loaded when allow_pickle=False\\)",
    ),
    "npz-pickled-member": (
        lambda t: _member_npz(t, "input.npy", pickle.dumps(Payload())),
        "'input' cannot be read",
    ),
    "npz-object-label-beside-good-input": (
        lambda t: _npz(t, input=X, label=np.array([Payload()], dtype=object)),
        "'label' cannot be read",
    ),
    "npy-pickled-file": (lambda t: _raw(t, "data.npy", _npy_bytes(np.array([Payload()], dtype=object))), "not an .npz"),
    "pickle-file": (lambda t: _raw(t, "data.pkl", pickle.dumps(Payload())), "not an .npz"),
}


def _folder(t: Path, files: dict[str, bytes | None] | None = None) -> Path:
    folder = t / "images"
    folder.mkdir()
    for name, content in (files or {}).items():
        if content is None:
            _png(folder / name)
        else:
            (folder / name).write_bytes(content)
    return folder


def _png(path: Path, size: int = 8) -> Path:
    from PIL import Image

    Image.fromarray(np.arange(size * size, dtype=np.uint8).reshape(size, size)).save(path)
    return path


def _bomb_png(t: Path) -> bytes:
    """A PNG header claiming 60000 x 60000 pixels (Pillow refuses it as a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _escaping_link(t: Path) -> Path:
    folder = _folder(t, {"a.png": None})
    (folder / "b.png").symlink_to(_png(t / "outside.png"))
    return folder


IMAGES = {
    "images-empty-folder": (lambda t: _folder(t), "image folder .*images holds no .jpg/.jpeg/.png/.bmp images"),
    "images-only-non-image-files": (lambda t: _folder(t, {"notes.txt": b"hi", "x.npy": b"\x93NUMPY"}), "holds no"),
    "images-corrupt-image": (lambda t: _folder(t, {"a.png": b"\x89PNG\r\n\x1a\nbroken"}), "cannot read image .*a.png"),
    "images-corrupt-second-image": (
        lambda t: _folder(t, {"a.png": None, "b.png": b"\x89PNG\r\n\x1a\nbroken"}),
        "cannot read image .*b.png",
    ),
    "images-decompression-bomb": (lambda t: _folder(t, {"a.png": _bomb_png(t)}), "cannot read image .*a.png.*"),
    "images-text-named-jpg": (lambda t: _folder(t, {"a.jpg": b"just text"}), "cannot read image .*a.jpg"),
    "images-symlink-escaping-folder": (_escaping_link, "image .*b.png is a link to .*outside.png, outside the folder"),
    "images-symlink-to-system-file": (
        lambda t: (_folder(t, {"a.png": None}) / "z.png").symlink_to("/etc/hostname") or t / "images",
        "z.png is a link to .*outside the folder",
    ),
    "images-dangling-symlink": (
        lambda t: (_folder(t, {"a.png": None}) / "z.png").symlink_to(t / "gone.png") or t / "images",
        "z.png is a link to .*outside the folder|cannot read image .*z.png",
    ),
}

# --image-spec strings, on a good image folder.
SPECS = {
    "spec-not-key-value": ("resize", "image spec: 'resize' is not key=value"),
    "spec-empty-value": ("resize=", "image spec: 'resize=' is not key=value"),
    "spec-unknown-field": ("zoom=2", "image spec: unknown field\\(s\\) 'zoom'"),
    "spec-resize-not-number": ("resize=abc", "image spec: bad value in {'resize': 'abc'}"),
    "spec-resize-negative": ("resize=-8", "resize must be a positive number"),
    "spec-resize-huge": ("resize=100000", "resize must be at most 16384"),
    "spec-crop-zero": ("crop=0", "crop must be one or two positive sizes"),
    "spec-crop-malformed": ("crop=axb", "image spec: bad value in 'crop=axb'"),
    "spec-crop-huge": ("crop=100000", "crop must be at most 16384"),
    "spec-crop-larger-than-image": ("crop=16", "smaller than the crop 16x16: raise resize"),
    "spec-std-zero": ("std=0", "std no zero"),
    "spec-mean-nan": ("mean=nan", "mean, std and scale must be finite"),
    "spec-scale-inf": ("scale=inf", "mean, std and scale must be finite"),
    "spec-mean-per-channel-mismatch": ("mean=0.1/0.2/0.3", "mean has 3 values for 1 channel"),
    "spec-layout-unknown": ("layout=NCWH", "layout must be NCHW or NHWC, not 'NCWH'"),
    "spec-layout-wrong-for-model": ("layout=NHWC", "input 'input' is \\[N, 1, 8, 8\\]: set color=RGB or color=L"),
    "spec-color-unknown": ("color=CMYK", "color must be RGB or L, not 'CMYK'"),
    "spec-color-wrong-for-model": ("color=RGB", "axis 1 must be 1"),
    "spec-dtype-unknown": ("dtype=float128x", "unknown dtype 'float128x'"),
    "spec-dtype-integer-with-scaling": ("dtype=int8", "takes raw pixels"),
    "spec-dtype-wrong-for-model": ("dtype=float64,scale=1", "has dtype float64"),
}

# module:function sources: each writes hostile_<case>.py in the working directory (module names must differ:
# Python caches imported modules).
CALLABLE_SOURCES = {
    "callable-module-missing": (None, "no_such_module_xyz:load", "cannot import 'no_such_module_xyz'"),
    "callable-function-missing": ("x = 1\n", "{m}:load", "module '{m}' has no attribute 'load'"),
    "callable-malformed": ("", "{m}:", "'{m}:' is not of the form module.path:function"),
    "callable-not-callable": ("load = 5\n", "{m}:load", "{m}:load is not callable"),
    "callable-import-raises": ("raise RuntimeError('no GPU here')\n", "{m}:load", "cannot import '{m}': RuntimeError: no GPU"),
    "callable-syntax-error": ("def load(:\n", "{m}:load", "cannot import '{m}': SyntaxError"),
    "callable-raises": (
        "def load():\n    raise ValueError('disk on fire')\n",
        "{m}:load",
        "{m}:load raised ValueError: disk on fire",
    ),
    "callable-raises-while-iterating": (
        "import numpy as np\ndef load():\n    yield np.zeros((2, 1, 8, 8), np.float32)\n    raise OSError('gone')\n",
        "{m}:load",
        "{m}:load raised OSError: gone",
    ),
    "callable-needs-arguments": ("def load(path):\n    return []\n", "{m}:load", "{m}:load raised TypeError"),
    "callable-returns-none": ("def load():\n    return None\n", "{m}:load", "must return an iterable of samples"),
    "callable-returns-int": ("def load():\n    return 3\n", "{m}:load", "must return an iterable of samples"),
    "callable-returns-nothing": ("def load():\n    return []\n", "{m}:load", "yielded zero samples"),
    "callable-yields-strings": ("def load():\n    return ['a']\n", "{m}:load", "'input' has dtype <U1"),
    "callable-yields-ragged": (
        "def load():\n    return [[[1.0], [1.0, 2.0]]]\n",
        "{m}:load",
        "'input' is not an array",
    ),
    "callable-yields-wrong-dtype": (
        "import numpy as np\ndef load():\n    return [np.zeros((2, 1, 8, 8))]\n",
        "{m}:load",
        "'input' has dtype float64",
    ),
    "callable-yields-wrong-shape": (
        "import numpy as np\ndef load():\n    return [np.zeros((2, 3, 8, 8), np.float32)]\n",
        "{m}:load",
        "axis 1 must be 1",
    ),
    "callable-yields-dict-missing-input": (
        "import numpy as np\ndef load():\n    return [{'pixels': np.zeros((2, 1, 8, 8), np.float32)}]\n",
        "{m}:load",
        "lacks input\\(s\\) 'input'",
    ),
    "callable-yields-nan": (
        "import numpy as np\ndef load():\n    return [np.full((2, 1, 8, 8), np.nan, np.float32)]\n",
        "{m}:load",
        "NaN or Inf",
    ),
    "callable-yields-object-array": (
        "import numpy as np\ndef load():\n    return [np.array([object()] * 64).reshape(1, 1, 8, 8)]\n",
        "{m}:load",
        "'input' has dtype object",
    ),
}

CASES = {**NPZ, **IMAGES}


def _quantize(calib, out: Path, *extra) -> list:
    return ["quantize", DIGITS, "-o", out, "--calib", calib, "--no-progress", *extra]


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_data_file_or_folder(tmp_path, monkeypatch, case):
    make, message = CASES[case]
    box = Sandbox(tmp_path, monkeypatch)
    source = make(tmp_path)
    box.refused(_quantize(source, tmp_path / "out.onnx"), message)
    assert not (box.work / "unpickled.marker").exists()


@pytest.mark.parametrize("case", sorted(SPECS))
def test_malformed_or_unfit_image_spec(tmp_path, monkeypatch, case):
    spec, message = SPECS[case]
    box = Sandbox(tmp_path, monkeypatch)
    folder = _folder(tmp_path, {"a.png": None, "b.png": None})
    box.refused(_quantize(folder, tmp_path / "out.onnx", "--image-spec", spec), message)


@pytest.mark.parametrize("case", sorted(CALLABLE_SOURCES))
def test_broken_module_function_source(tmp_path, monkeypatch, case):
    code, source, message = CALLABLE_SOURCES[case]
    box = Sandbox(tmp_path, monkeypatch)
    module = "hostile_" + case.replace("-", "_")
    if code is not None:
        (box.work / f"{module}.py").write_text(code)
    box.refused(_quantize(source.format(m=module), tmp_path / "out.onnx"), message.format(m=module))


@pytest.mark.parametrize("case", ["npz-nan", "npz-object-array", "images-corrupt-image"])
def test_broken_evaluation_data_is_refused_before_conversion(tmp_path, monkeypatch, case):
    make, message = CASES[case]
    box = Sandbox(tmp_path, monkeypatch)
    args = ["convert", DIGITS, "--target", "onnxruntime", "--calib", DIGITS_CALIB, "-o", tmp_path / "out"]
    source = make(tmp_path)
    line = box.refused([*args, "--eval-data", source, "--no-progress"], message)
    assert str(source) in line, line


@pytest.mark.parametrize("command", ["quantize", "convert", "compare"])
def test_an_image_spec_without_an_image_folder_is_refused(tmp_path, monkeypatch, command):
    box = Sandbox(tmp_path, monkeypatch)
    args = {
        "quantize": _quantize(DIGITS_CALIB, tmp_path / "out.onnx"),
        "convert": ["convert", DIGITS, "--calib", DIGITS_CALIB, "--eval-data", DIGITS_TEST, "-o", tmp_path / "out"],
        "compare": ["compare", DIGITS, DIGITS, "--data", DIGITS_TEST],
    }[command]
    box.refused([*args, "--image-spec", "resize=8"], r"--image-spec applies to image folders, and .*digits_\w+\.npz")


def test_extra_npz_keys_are_labels_and_ignored(tmp_path, monkeypatch):
    """The documented exception: keys that name no input (labels) are allowed beside the inputs."""
    from edgeq.data import input_specs, load_npz
    from edgeq.io.onnx_model import load_model

    data = load_npz(_npz(tmp_path, input=X, label=np.arange(16), extra=X), input_specs(load_model(DIGITS)))
    assert data.num_samples == 16 and list(data.arrays) == ["input"]


def test_real_process_refuses_a_pickle_without_running_it(tmp_path):
    source = _member_npz(tmp_path, "input.npy", _npy_bytes(np.array([Payload()], dtype=object)))
    code, stderr = edgeq_process(*_quantize(source, tmp_path / "o.onnx"), cwd=tmp_path)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"edgeq: error: {source}: array 'input' cannot be read (Object arrays"), stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]
