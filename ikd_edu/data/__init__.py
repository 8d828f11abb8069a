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

from ikd_edu._lazy import lazy_exports

_EXPORTS = {
    "TopDownCocoDataset": "ikd_edu.data.coco",
    "parse_coco_keypoints": "ikd_edu.data.coco",
    "TopDownMpiiDataset": "ikd_edu.data.mpii",
    "load_mpii_head_boxes": "ikd_edu.data.mpii",
    "mpii_head_sizes": "ikd_edu.data.mpii",
    "AugmentConfig": "ikd_edu.data.transforms",
    "sample_augmentation": "ikd_edu.data.transforms",
    "flip_joints": "ikd_edu.data.transforms",
    "flip_center": "ikd_edu.data.transforms",
    "half_body_transform": "ikd_edu.data.transforms",
    "crop_image": "ikd_edu.data.transforms",
    "crop_images_batched": "ikd_edu.data.transforms",
    "normalize": "ikd_edu.data.transforms",
    "denormalize": "ikd_edu.data.transforms",
    "load_rgb": "ikd_edu.data.images",
    "check_coco_keypoints": "ikd_edu.data.check",
    "CheckReport": "ikd_edu.data.check",
    "generate_synthetic": "ikd_edu.data.synthetic",
    "ensure_synthetic": "ikd_edu.data.synthetic",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
