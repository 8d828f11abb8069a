"""Argument checks shared by the CLI, the config and the library: one-line :class:`UserError` s.

* :func:`input_size` - a crop size the models can take: both sides multiples of
  ``STRIDE`` (32, the trunk's output stride) and within ``MIN_SIDE..MAX_SIDE``;
* :func:`joint_index` - a joint of the skeleton (``0 .. K-1``).
"""
from __future__ import annotations

import re
from typing import Sequence

from ikd_edu.errors import UserError

STRIDE = 32  # the trunks downsample by 32: each side of the input must be a multiple of it
MIN_SIDE = 32
MAX_SIDE = 1024  # 4x the reference 256x192; larger crops only cost memory (a 1024x1024 crop: ~2 GB of activations)


def parse_size(text: str, what: str = "--input") -> tuple[int, int]:
    """``"128x96"`` -> ``(128, 96)`` (height x width)."""
    m = re.fullmatch(r"\s*(\d{1,9})\s*[xX]\s*(\d{1,9})\s*", str(text))
    if not m:
        raise UserError(f"{what} must look like HxW (height x width), e.g. 128x96; got {text!r}")
    return int(m.group(1)), int(m.group(2))


def input_size(size: Sequence[int], what: str = "data.input_size") -> tuple[int, int]:
    """Check a crop size ``(H, W)``: multiples of 32 within 32..1024 per side."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"{what}: expected (height, width), got {size!r}") from None
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise UserError(f"{what}: {h}x{w} is out of range; each side must be within {MIN_SIDE}..{MAX_SIDE} "
                        "pixels (e.g. 128x96 or 256x192)")
    if h % STRIDE or w % STRIDE:
        raise UserError(f"{what}: height and width must be multiples of {STRIDE} (the trunk's stride), got {h}x{w}; "
                        f"e.g. {max(STRIDE, round(h / STRIDE) * STRIDE)}x{max(STRIDE, round(w / STRIDE) * STRIDE)}")
    return h, w


def joint_index(index: int, num_joints: int, what: str = "joint") -> int:
    """Check that ``index`` names one of ``num_joints`` joints."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_joints:
        raise UserError(f"{what}: {index!r} is not a joint index; use 0..{num_joints - 1} "
                        f"(the skeleton has {num_joints} joints)")
    return index


def num_joints_of(data_root, split: str) -> int:
    """Joints of the skeleton ``ikd-edu app`` uses (COCO's 17: the App reads COCO-format splits)."""
    from ikd_edu.skeleton import COCO

    return COCO.num_joints
