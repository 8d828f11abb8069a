"""Top-down geometry: person box -> (center, scale) -> affine crop, and back.

Conventions (SimpleBaseline reference code):

* sizes are written ``(H, W)`` everywhere in ikd-edu (input 256x192 means H=256, W=192);
* a box is COCO ``(x, y, w, h)`` in image pixels;
* ``center`` is the box centre ``(x + w/2, y + h/2)``; ``scale`` is the box size in units of
  ``pixel_std = 200`` pixels after the box was padded to the crop's aspect ratio ``W/H``
  and enlarged by ``padding = 1.25``;
* the crop transform maps three points: the centre, a point half a box width above it
  (rotated by ``rotation`` degrees) and a third point at a right angle, onto the crop's
  centre and the matching crop points, exactly like ``cv2.getAffineTransform`` would.
  Pixel *centres* sit at integer coordinates (OpenCV's convention).

All functions are batched over a leading N axis and work on torch tensors (any device) or
array-likes; results are float64 unless the input was a float32 tensor on a GPU.
"""
from __future__ import annotations

import math

import numpy as np
import torch

PIXEL_STD = 200.0
BOX_PADDING = 1.25


def _as_tensor(x, dtype=torch.float64, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype, device=device if device is not None else x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def box_to_center_scale(
    boxes, aspect_ratio: float, pixel_std: float = PIXEL_STD, padding: float = BOX_PADDING
) -> tuple[torch.Tensor, torch.Tensor]:
    """COCO boxes ``(N, 4)`` as ``(x, y, w, h)`` -> ``center (N, 2)``, ``scale (N, 2)``.

    The box is widened or heightened (never shrunk) to ``w / h = aspect_ratio`` (crop
    ``W / H``, 192/256 for the standard input), then ``scale = (w, h) / pixel_std * padding``.
    """
    b = _as_tensor(boxes).reshape(-1, 4)
    x, y, w, h = b.unbind(-1)
    center = torch.stack([x + w * 0.5, y + h * 0.5], dim=-1)
    wider = w > aspect_ratio * h
    h = torch.where(wider, w / aspect_ratio, h)
    w = torch.where(~wider & (w < aspect_ratio * h), h * aspect_ratio, w)
    scale = torch.stack([w, h], dim=-1) / pixel_std * padding
    return center, scale


def _third_point(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Point c with b->c equal to a->b rotated by +90 degrees: ``b + (-(a-b)_y, (a-b)_x)``."""
    d = a - b
    return b + torch.stack([-d[..., 1], d[..., 0]], dim=-1)


def get_affine_transform(
    center,
    scale,
    rotation,
    output_size: tuple[int, int],
    shift=(0.0, 0.0),
    inverse: bool = False,
    pixel_std: float = PIXEL_STD,
) -> torch.Tensor:
    """Affine matrices ``(N, 2, 3)`` mapping image points into the crop (or back if ``inverse``).

    Args:
        center: ``(N, 2)`` box centres in image pixels.
        scale: ``(N, 2)`` box sizes in units of ``pixel_std``; only ``scale[:, 0]`` (the
            width) sets the zoom, as in the reference (the aspect ratio is fixed).
        rotation: ``(N,)`` degrees, counter-clockwise in the image as displayed.
        output_size: crop ``(H, W)``.
        shift: fraction of the box size to shift the source centre by, ``(2,)``.
        inverse: return the crop -> image matrix instead.

    Returns:
        ``(N, 2, 3)`` float64 matrices ``A`` with ``[u, v]^T = A @ [x, y, 1]^T``.
    """
    c = _as_tensor(center).reshape(-1, 2)
    dev = c.device
    s = _as_tensor(scale, device=dev).reshape(-1, 2)
    n = max(c.shape[0], s.shape[0])
    c, s = c.expand(n, 2), s.expand(n, 2)
    rot = _as_tensor(rotation, device=dev).reshape(-1).expand(n) * (math.pi / 180.0)
    sh = _as_tensor(shift, device=dev).reshape(-1, 2)
    out_h, out_w = output_size

    src_w = s[:, 0] * pixel_std
    sn, cs = torch.sin(rot), torch.cos(rot)
    # the point (0, -src_w/2) rotated by `rot`
    src_dir = torch.stack([0.5 * src_w * sn, -0.5 * src_w * cs], dim=-1)
    src0 = c + s * pixel_std * sh
    src1 = src0 + src_dir
    dst0 = torch.tensor([out_w * 0.5, out_h * 0.5], dtype=torch.float64, device=dev).expand(n, 2)
    dst1 = dst0 + torch.tensor([0.0, -0.5 * out_w], dtype=torch.float64, device=dev)
    src = torch.stack([src0, src1, _third_point(src0, src1)], dim=1)  # (N, 3, 2)
    dst = torch.stack([dst0, dst1, _third_point(dst0, dst1)], dim=1)  # (N, 3, 2)
    if inverse:
        src, dst = dst, src
    ones = torch.ones(n, 3, 1, dtype=torch.float64, device=dev)
    # rows [x, y, 1] @ A^T = [u, v]  ->  A^T = solve(X, dst)
    a_t = torch.linalg.solve(torch.cat([src, ones], dim=-1), dst)  # (N, 3, 2)
    return a_t.transpose(1, 2).contiguous()


def affine_points(points, matrices) -> torch.Tensor:
    """Apply ``(N, 2, 3)`` matrices to points ``(N, K, 2)`` -> ``(N, K, 2)`` (float64)."""
    m = _as_tensor(matrices)
    p = _as_tensor(points, device=m.device)
    return p @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]


def heatmap_to_image(coords, center, scale, heatmap_size: tuple[int, int]) -> torch.Tensor:
    """Map heatmap coordinates ``(N, K, 2)`` back to image pixels with the inverse affine.

    ``heatmap_size`` is ``(h, w)`` of the heatmap; the crop was made without rotation at
    test time, so this is the reference ``transform_preds``.
    """
    c = _as_tensor(center).reshape(-1, 2)
    inv = get_affine_transform(c, scale, torch.zeros(c.shape[0], dtype=torch.float64), heatmap_size, inverse=True)
    return affine_points(coords, inv)
