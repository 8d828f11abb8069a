"""Data: COCO / MPII top-down datasets, the synthetic set, transforms, image loading, checks.

Public names are imported lazily (``from ikd_edu.data import TopDownCocoDataset`` works,
but ``import ikd_edu.data`` stays cheap):

* :mod:`ikd_edu.data.coco` - ``TopDownCocoDataset``, ``parse_coco_keypoints``
* :mod:`ikd_edu.data.mpii` - ``TopDownMpiiDataset``, ``load_mpii_head_boxes``, ``mpii_head_sizes``
* :mod:`ikd_edu.data.transforms` - ``AugmentConfig``, ``sample_augmentation``, ``flip_joints``,
  ``flip_center``, ``half_body_transform``, ``crop_image``, ``crop_images_batched``, ``normalize``
* :mod:`ikd_edu.data.images` - ``load_rgb``
* :mod:`ikd_edu.data.check` - ``check_coco_keypoints``, ``CheckReport``
* :mod:`ikd_edu.data.synthetic` - ``generate_synthetic``, ``ensure_synthetic``
* :mod:`ikd_edu.data.registry` - ``DatasetSpec``, ``register_dataset``, ``get_dataset``: the
  table of datasets (builder, skeleton, metric) that ``data.dataset`` names
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "TopDownCocoDataset": "coco",
    "parse_coco_keypoints": "coco",
    "TopDownMpiiDataset": "mpii",
    "load_mpii_head_boxes": "mpii",
    "mpii_head_sizes": "mpii",
    "AugmentConfig": "transforms",
    "sample_augmentation": "transforms",
    "flip_joints": "transforms",
    "flip_center": "transforms",
    "half_body_transform": "transforms",
    "crop_image": "transforms",
    "crop_images_batched": "transforms",
    "normalize": "transforms",
    "denormalize": "transforms",
    "load_rgb": "images",
    "check_coco_keypoints": "check",
    "CheckReport": "check",
    "generate_synthetic": "synthetic",
    "ensure_synthetic": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"ikd_edu.data.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ikd_edu.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
