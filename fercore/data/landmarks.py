"""Five facial landmarks for faces that come without them (left eye, right eye, nose, left and
right mouth corner, image left first; pixel (x, y) with pixel centres at integers).

POI crops facial subregions around these points. Pre-aligned faces without landmark files get a
template `[ours]`: the mean landmarks of a set that has them (`mean_template`), else the 5-point
template of ArcFace's 112x112 alignment `[lineage: insightface]`. Arbitrary photos can go through
an optional detector, MTCNN from facenet-pytorch (pure PyTorch; its weights ship inside its
wheel). facenet-pytorch 2.6.0 pins torch<2.3 and numpy<2 in its metadata, so it is installed
without its dependencies, which keeps fercore's torch: `pip install --no-deps "facenet-pytorch==2.6.0"`
(it runs on torch 2.14 and numpy 2.4). Nothing in fercore's default path, tests or CI needs it.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from .faceset import FaceSet

# insightface's `arcface_dst`: 5 points of a 112x112 aligned face, in pixels
ARCFACE_112 = torch.tensor([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                            [41.5493, 92.3655], [70.7299, 92.2041]])
TEMPLATE = ARCFACE_112 / 112  # as fractions of the image side
FLIP_LANDMARKS = [1, 0, 2, 4, 3]  # a mirror swaps the eyes and the mouth corners
MTCNN_INSTALL = 'pip install --no-deps "facenet-pytorch==2.6.0"'


def mean_template(landmarks: Tensor, image_size: int) -> Tensor:
    """(5, 2) mean of (N, 5, 2) pixel landmarks, as fractions of the image side."""
    return ((landmarks.float() + 0.5) / image_size).mean(0)


def mirror_template(template: Tensor) -> Tensor:
    """The template of the horizontally flipped face: x -> 1 - x, eyes and mouth corners swapped."""
    out = template[FLIP_LANDMARKS].clone()
    out[..., 0] = 1 - out[..., 0]
    return out


def template_landmarks(template: Tensor, n: int, image_size: tuple[int, int],
                       flipped: Tensor | None = None) -> Tensor:
    """(n, 5, 2) pixel landmarks from a (5, 2) fractional template; mirrored where `flipped`."""
    h, w = image_size
    size = template.new_tensor([w, h])
    pts = (template * size - 0.5).expand(n, 5, 2)
    if flipped is not None:
        mirrored = mirror_template(template) * size - 0.5
        pts = torch.where(flipped.view(-1, 1, 1), mirrored.expand(n, 5, 2), pts)
    return pts.contiguous()


def mtcnn_available() -> bool:
    return importlib.util.find_spec("facenet_pytorch") is not None


def detect_landmarks(images: Tensor, device: str = "cpu", batch_size: int = 32) -> tuple[Tensor, Tensor]:
    """MTCNN landmarks of the largest face in each (N, 3, H, W) uint8 image.

    Returns (N, 5, 2) pixel landmarks (NaN where no face was found) and an (N,) found mask.
    Needs facenet-pytorch (see the module docstring); detect on the full photo, before cropping.
    """
    if not mtcnn_available():
        raise DataError(f"landmark detection needs facenet-pytorch: {MTCNN_INSTALL}")
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, select_largest=True, device=device)
    out = torch.full((len(images), 5, 2), float("nan"))
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].permute(0, 2, 3, 1).numpy()
        _, _, points = mtcnn.detect(list(chunk), landmarks=True)
        for j, p in enumerate(points):
            if p is not None and len(p):
                out[start + j] = torch.from_numpy(np.asarray(p[0], dtype=np.float32))
    return out, ~torch.isnan(out).flatten(1).any(1)


def with_landmarks(fs: FaceSet, how: str = "template", template: Tensor | None = None) -> FaceSet:
    """`fs` with landmarks filled where it has none: 'template' (default: ArcFace's) or 'mtcnn'
    (the template where MTCNN finds no face). Records what was done in `meta['landmarks']`."""
    if fs.landmarks is not None:
        return fs
    t = TEMPLATE if template is None else template
    size = tuple(fs.images.shape[-2:])
    filled = template_landmarks(t, len(fs), size)
    meta = dict(fs.meta, landmarks=how)
    if how == "mtcnn":
        found_pts, found = detect_landmarks(fs.images)
        filled[found] = found_pts[found]
        meta["landmarks_detected"] = int(found.sum())
    elif how != "template":
        raise DataError(f"landmarks: expected 'template' or 'mtcnn', got {how!r}")
    return fs.replace(landmarks=filled, meta=meta)


def five_point(lm68: np.ndarray) -> np.ndarray:
    """68-point (iBUG order) landmarks (..., 68, 2) -> fercore's 5 points: eye centres (image-left
    eye first: points 36-41 are the subject's right eye), nose tip 30, mouth corners 48 and 54."""
    return np.stack([lm68[..., 36:42, :].mean(-2), lm68[..., 42:48, :].mean(-2), lm68[..., 30, :],
                     lm68[..., 48, :], lm68[..., 54, :]], -2)
