"""The exceptions edgeq raises for problems with what it was given; the CLI prints each as one line and exits 2.

Every message is one line that names the file or option at fault and what is wrong with it, the same text from
the Python API and the command line. Catch ``EdgeqError`` for all of them, or one subclass for one kind:

* ``ModelError``: a model file or graph edgeq cannot read, check or trust (not ONNX, invalid, external data
  outside its folder, an unsupported opset, a .tflite that is not a flatbuffer);
* ``DataError``: calibration or evaluation data that does not fit the model (missing inputs, wrong shapes or
  dtypes, NaN/Inf, no samples);
* ``RecipeError``: an option or recipe value out of range, an unknown pass or target;
* ``OutputError``: an output path that would overwrite an input, or cannot be written;
* ``UnsupportedError``: a model that is valid but uses something a pass or target cannot express (an operator
  TFLite has no kernel for, a padding no TFLite op computes);
* ``ExecutionError``: a runtime (onnxruntime, LiteRT, TFLite Micro) that refused to load or run a model.

Anything else that escapes is a bug in edgeq; the CLI shows it as an internal error (exit 3) and ``--debug``
prints its traceback.
"""


class EdgeqError(Exception):
    """A problem with the user's input or environment, stated in one line."""


class ModelError(EdgeqError):
    """A model file or graph that cannot be read, checked or trusted."""


class DataError(EdgeqError):
    """Calibration or evaluation data that does not fit the model."""


class RecipeError(EdgeqError):
    """An option or recipe value that is not allowed."""


class OutputError(EdgeqError):
    """An output path that cannot be written, or would overwrite an input."""


class UnsupportedError(EdgeqError):
    """A valid model that uses something a pass or target cannot express.

    Raised for one node, it says which (``op``, ``node``) and why, as a reason ``code`` that coverage reports
    count (one of ``REASON_CODES``); build it with :func:`unsupported`.
    """

    def __init__(
        self,
        message: str,
        *,
        op: str | None = None,
        node: str | None = None,
        code: str = "unsupported",
        reason: str | None = None,
    ):
        super().__init__(message)
        self.op, self.node, self.code = op, node, code
        self.reason = (
            message if reason is None else reason
        )  # the message without "unsupported: <op> at <node>: "


# Why a node cannot be lowered as asked (the codes of UnsupportedError and of the coverage report).
REASON_CODES = {
    "no-lowering": "the target has no lowering for this op type",
    "attribute": "an attribute or parameter value the target's operator cannot express",
    "not-quantized": "an input or output the target needs quantized is float",
    "no-int8-kernel": "the target runs this op in float only",
    "no-micro-kernel": "TFLite Micro has no kernel for this op and type",
    "no-float-kernel": "a float island would need a float32 kernel that edgeq's reference does not compute bit for bit",
    "dynamic": "a shape or parameter that is only known at run time",
    "dtype": "a tensor type the target cannot take",
    "layout": "a layout or broadcast the target's operator cannot express",
    "control-flow": "compute inside If/Loop/Scan bodies, which edgeq does not quantize",
    "unsupported": "not supported",
}


def unsupported(node, reason: str, code: str = "unsupported") -> UnsupportedError:
    """``unsupported: <op> at <node>: <reason>`` for NODE (an onnx_ir node, or an (op, name) pair)."""
    if code not in REASON_CODES:
        raise ValueError(f"unknown reason code {code!r}")
    op, name = (node.op_type, node.name) if hasattr(node, "op_type") else node
    return UnsupportedError(
        f"unsupported: {op} at {name}: {reason}", op=op, node=name, code=code, reason=reason
    )


class ExecutionError(EdgeqError):
    """A runtime that refused to load or run a model."""


def first_line(exc: BaseException) -> str:
    """The first line of EXC's message (runtimes raise multi-line messages), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
