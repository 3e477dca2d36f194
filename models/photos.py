"""Real photographs that ship inside installed packages, and random "views" of them for MobileNetV2.

No download is involved: the photos are bundled with scikit-image (its offline images), scikit-learn
(``load_sample_images``) and matplotlib (``grace_hopper.jpg``). A view is a random crop of 30-100% of a photo's
area with aspect ratio 3/4..4/3, flipped horizontally with probability 1/2, resized to 224x224 (bilinear)
and normalized with ImageNet's mean/std: the usual "random resized crop" augmentation. Evaluation and
calibration views come from the same photos with different seeds, so calibration never sees an evaluation view.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import cache

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "moon",
    "brick",
    "grass",
    "gravel",
    "colorwheel",
    "cell",
)
EVAL_SEED = 0
CALIB_SEED = 1


@cache
def photos() -> tuple[Image.Image, ...]:
    """Every bundled photo as an RGB PIL image (gray ones replicated to three channels)."""
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    arrays = [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
    arrays += list(load_sample_images().images)
    images = [Image.fromarray(a).convert("RGB") for a in arrays]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        images.append(Image.open(f).convert("RGB"))
    return tuple(images)


def _view(image: Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
    w, h = image.size
    area = w * h * rng.uniform(0.3, 1.0)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw = min(w, round(math.sqrt(area * aspect)))
    ch = min(h, round(math.sqrt(area / aspect)))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = image.crop((left, top, left + cw, top + ch)).resize((size, size), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = (np.asarray(crop, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return pixels.transpose(2, 0, 1).astype(np.float32)


def iter_views(n: int, seed: int, size: int = 224) -> Iterator[np.ndarray]:
    """N views [3, size, size], one at a time (for streaming calibration)."""
    rng = np.random.default_rng(seed)
    images = photos()
    for i in range(n):
        yield _view(images[i % len(images)], rng, size)


def eval_views(n: int = 256, seed: int = EVAL_SEED, size: int = 224) -> np.ndarray:
    return np.stack(list(iter_views(n, seed, size)))


def calib_views(n: int = 64, seed: int = CALIB_SEED, size: int = 224) -> np.ndarray:
    return np.stack(list(iter_views(n, seed, size)))
