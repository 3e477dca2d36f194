"""TEMPORARY shim while the TFLite tests move to edgeq.pipeline.Pipeline (removed before this lands)."""

from edgeq.pipeline.pipeline import Pipeline


def calibrate_model(model, data, recipe, *, progress=True):
    return Pipeline(recipe, progress=progress).calibrate(model, data)


def build_qdq(calibration, recipe, activation_type=None, *, progress=False):
    return Pipeline(recipe, progress=progress).quantize(calibration, activation_type)
