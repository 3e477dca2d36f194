"""Calibration sources for the memory benchmark: MobileNetV2 photo views generated one at a time, so the
data itself takes no memory and the peak RSS is edgeq's own (``--calib benchmarks.photo_stream:views_1000``)."""

from models.photos import CALIB_SEED, iter_views


def views_100():
    return iter_views(100, CALIB_SEED)


def views_1000():
    return iter_views(1000, CALIB_SEED)
