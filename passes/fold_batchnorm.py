"""Fold BatchNormalization into the preceding Conv, ConvTranspose or Gemm, keeping its statistics.

BatchNormalization computes ``y = gamma * (x - mean) / sqrt(var + eps) + beta``. After a linear layer
``x = W * z + b`` it is the same linear layer with, per output channel c,

    W'[c] = W[c] * gamma[c] / sqrt(var[c] + eps)
    b'[c] = (b[c] - mean[c]) * gamma[c] / sqrt(var[c] + eps) + beta[c]

onnxscript's rewriter rules do the folding. What they drop, and what this pass keeps, are the BatchNorm's
``gamma`` and ``beta``: they describe the distribution of the folded layer's output (mean beta, standard
deviation |gamma| per channel, before the activation), which high-bias absorption and analytic bias
correction (Nagel et al. 2019, "Data-Free Quantization", sections 4.2 and 4.3) need after the BatchNorm is gone.
They are stored on the folded node as ``metadata_props`` (JSON lists under ``BN_GAMMA_KEY`` and ``BN_BETA_KEY``).
"""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
from onnxscript import rewriter
from onnxscript.rewriter.rules.common import _fuse_batchnorm as fuse_batchnorm

BN_GAMMA_KEY = "edgeq.bn_gamma"
BN_BETA_KEY = "edgeq.bn_beta"


class _KeepStatistics:
    """Mixin for onnxscript's BatchNorm fusion rules: record gamma and beta on the fused node."""

    def rewrite(self, op, x, inbound_out, batchnorm_out):
        gamma, beta = (v.const_value.numpy() for v in batchnorm_out.producer().inputs[1:3])
        fused = super().rewrite(op, x, inbound_out, batchnorm_out)
        node = fused.producer()
        node.metadata_props[BN_GAMMA_KEY] = json.dumps(np.asarray(gamma, np.float64).tolist())
        node.metadata_props[BN_BETA_KEY] = json.dumps(np.asarray(beta, np.float64).tolist())
        return fused


class _FoldIntoConv(_KeepStatistics, fuse_batchnorm.FuseBatchNormIntoConv):
    pass


class _FoldIntoConvTranspose(_KeepStatistics, fuse_batchnorm.FuseBatchNormIntoConvTranspose):
    pass


class _FoldIntoGemm(_KeepStatistics, fuse_batchnorm.FuseBatchNormIntoGemm):
    pass


def batchnorm_statistics(node: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """The (gamma, beta) that were folded into NODE, or None."""
    if BN_GAMMA_KEY not in node.metadata_props:
        return None
    return (
        np.asarray(json.loads(node.metadata_props[BN_GAMMA_KEY]), np.float32),
        np.asarray(json.loads(node.metadata_props[BN_BETA_KEY]), np.float32),
    )


class FoldBatchNormPass(ir.passes.InPlacePass):
    """Fold every BatchNormalization that follows a Conv/ConvTranspose/Gemm with constant weights."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        rules = rewriter.RewriteRuleSet(
            [_FoldIntoConv().rule(), _FoldIntoConvTranspose().rule(), _FoldIntoGemm().rule()]
        )
        count = rules.apply_to_model(model)
        return ir.passes.PassResult(model, modified=bool(count))
