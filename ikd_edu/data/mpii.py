"""MPII Human Pose in the SimpleBaseline JSON layout, as a top-down dataset.

The annotation file (``train.json``, ``valid.json`` of the SimpleBaseline / HRNet release) is
a JSON list with one entry per person::

    {"image": "015601864.jpg", "center": [594.0, 257.0], "scale": 3.021,
     "joints": [[x, y], ... 16], "joints_vis": [1, 0, ... 16],
     "head_box": [x1, y1, x2, y2]}          # optional, ikd-edu's field for PCKh

``center`` and ``joints`` are 1-based MATLAB pixel coordinates and ``scale`` is the person
height / 200. As in the reference (``lib/dataset/mpii.py``) the centre is moved down
``15 * scale`` pixels and the scale enlarged 1.25x "to avoid cropping limbs", then
everything is made 0-based (``- 1``). Test files without ``joints`` load with zero joints.

PCKh needs the head size of every person: :func:`load_mpii_head_boxes` reads the
``head_box`` fields of such a JSON file, or ``headboxes_src`` of the official
``gt_valid.mat`` (scipy); :func:`mpii_head_sizes` turns boxes into sizes. An evaluation
dataset (``train=False``) resolves its head boxes when it is built
(:func:`resolve_head_boxes`): the entries' ``head_box`` fields, else ``gt_valid.mat`` next
to the annotation file (the documented layout, ``data/mpii/annotations/``). Without either
it stops with a one-line error naming the file and where to get it, so a training run
fails before its first step instead of at its first evaluation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ikd_edu.data.coco import TopDownDataset
from ikd_edu.errors import UserError
from ikd_edu.io import read_json
from ikd_edu.skeleton import MPII, Skeleton

HEAD_SIZE_FACTOR = 0.6  # PCKh: head size = 0.6 x head-box diagonal (MPII's SC_BIAS)


def mpii_not_found_message(path: Path, what: str) -> str:
    return (
        f"MPII not found at {path} ({what} missing); download the images from "
        "http://human-pose.mpi-inf.mpg.de/ and the SimpleBaseline JSON annotations into data/mpii/ "
        "as data/README.md describes, or use the synthetic COCO-format set "
        "(`ikd-edu data synth --out data/synthetic`)"
    )


#: where ``gt_valid.mat`` (and ``valid.json``) come from
HEAD_BOX_SOURCE = ("the SimpleBaseline MPII annotations (train.json, valid.json, gt_valid.mat) linked from "
                   "https://github.com/microsoft/human-pose-estimation.pytorch#data-preparation")


def default_head_box_file(ann_file) -> Path:
    """``gt_valid.mat`` beside the annotation file: ``data/mpii/annotations/gt_valid.mat``."""
    return Path(ann_file).parent / "gt_valid.mat"


def resolve_head_boxes(ann_file, entries: list[dict], head_box_file=None) -> np.ndarray:
    """Head boxes ``(N, 4)`` for the N ``entries`` of ``ann_file``, as PCKh needs them.

    The entries' own ``head_box`` fields when every entry has one, else ``head_box_file``
    (default :func:`default_head_box_file`), whose row count must equal N (``gt_valid.mat``
    lists the persons of ``valid.json`` in file order). UserError (one line) when missing.
    """
    if entries and all("head_box" in a for a in entries):
        return np.asarray([a["head_box"] for a in entries], dtype=np.float64).reshape(-1, 4)
    path = Path(head_box_file) if head_box_file else default_head_box_file(ann_file)
    if not path.exists():
        raise UserError(f"MPII head boxes missing: PCKh needs {path} (the entries of {ann_file} have no head_box); "
                        f"get gt_valid.mat with {HEAD_BOX_SOURCE} and put it there, as data/README.md describes")
    boxes = load_mpii_head_boxes(path)
    if len(boxes) != len(entries):
        raise UserError(f"{path} has {len(boxes)} head boxes but {ann_file} has {len(entries)} persons; "
                        "gt_valid.mat belongs to valid.json of the same release")
    return boxes


def _load_entries(ann_file: Path) -> list[dict]:
    if not ann_file.exists():
        raise UserError(mpii_not_found_message(ann_file, "annotation file"))
    entries = read_json(ann_file, what="MPII annotation file")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{ann_file} is not an MPII annotation file in the SimpleBaseline layout: "
                        "expected a non-empty JSON list of {image, center, scale, joints, joints_vis}")
    return entries


class TopDownMpiiDataset(TopDownDataset):
    """MPII, one item per annotated person; items as :class:`ikd_edu.data.coco.TopDownCocoDataset`.

    Args:
        ann_file: SimpleBaseline-layout JSON (see the module docstring).
        image_dir: folder of the MPII images.
        input_size: crop ``(H, W)`` (reference 256x256); heatmap_size ``(h, w)`` (64x64).
        max_instances: as for COCO.
        crop_options: ``sigma``, ``train``, ``augment``, ``unbiased_encoding``, ``target_weight_rule``,
            ``channel_order``, as for COCO.
        head_box_file: head boxes for PCKh (default ``gt_valid.mat`` beside ``ann_file``;
            ignored when every entry has ``head_box``); see :func:`resolve_head_boxes`.
        need_head_boxes: resolve them now, UserError if missing (default: ``not train``).

    Items: ``image_id`` is the entry's index in the file, ``box_score`` 1, ``area`` the
    reference ``scale[0] * scale[1] * 200^2``, ``gt_area`` the same.
    Attributes: ``head_boxes`` ``(N, 4)`` (NaN where unknown: a training set without them).
    """

    def __init__(self, ann_file, image_dir, input_size=(256, 256), heatmap_size=(64, 64), skeleton: Skeleton = MPII,
                 max_instances: int | None = None, head_box_file=None, need_head_boxes: bool | None = None,
                 **crop_options) -> None:
        # crop_options: the crop and target keywords every top-down dataset takes (TopDownDataset._setup)
        self._setup(input_size, heatmap_size, skeleton=skeleton, **crop_options)
        self.ann_file, self.image_dir = Path(ann_file), Path(image_dir)
        entries = _load_entries(self.ann_file)
        if not self.image_dir.is_dir():
            raise UserError(mpii_not_found_message(self.image_dir, "image folder"))
        need_head_boxes = (not self.train) if need_head_boxes is None else need_head_boxes
        resolved = resolve_head_boxes(self.ann_file, entries, head_box_file) if need_head_boxes else None
        if max_instances is not None:
            entries = entries[: int(max_instances)]
        k = skeleton.num_joints
        n = len(entries)
        centers, scales = np.zeros((n, 2)), np.zeros((n, 2))
        joints, head_boxes = np.zeros((n, k, 3)), np.full((n, 4), np.nan)
        names = []
        for i, a in enumerate(entries):
            try:
                c = np.asarray(a["center"], dtype=np.float64).reshape(2)
                s = float(a["scale"])
                names.append(str(a["image"]))
                if "joints" in a:
                    j = np.asarray(a["joints"], dtype=np.float64).reshape(k, 2)
                    v = np.asarray(a.get("joints_vis", np.ones(k)), dtype=np.float64).reshape(k)
                    joints[i, :, :2] = j - 1.0  # MATLAB 1-based -> 0-based
                    joints[i, :, 2] = v
                if "head_box" in a:
                    head_boxes[i] = np.asarray(a["head_box"], dtype=np.float64).reshape(4)
            except (KeyError, TypeError, ValueError) as exc:
                raise UserError(f"{self.ann_file}: entry {i} is malformed ({type(exc).__name__}: {exc}); "
                                f"expected image, center (2,), scale, joints ({k}, 2), joints_vis ({k},)") from None
            if not (np.isfinite(c).all() and np.isfinite(s) and s > 0):
                raise UserError(f"{self.ann_file}: entry {i} has a non-finite centre or non-positive scale")
            sc = np.array([s, s])
            if c[0] != -1:  # reference: move the centre down and enlarge, to keep the limbs
                c[1] = c[1] + 15 * sc[1]
                sc = sc * 1.25
            centers[i], scales[i] = c - 1.0, sc
        uniq, rec_image = np.unique(np.asarray(names), return_inverse=True)
        self.image_paths = [str(self.image_dir / u) for u in uniq]
        self.rec_image = rec_image.astype(np.int64)
        self.rec_image_id = np.arange(n, dtype=np.int64)
        self.rec_center, self.rec_scale, self.rec_joints = centers, scales, joints
        self.rec_box_score = np.ones(n)
        self.rec_gt_area = np.prod(scales, axis=1) * 200.0**2
        if resolved is not None:
            head_boxes = resolved[:n]
        self.head_boxes = head_boxes

    def __repr__(self) -> str:
        return f"TopDownMpiiDataset({len(self)} persons, {'train' if self.train else 'eval'}, input {self.input_size})"


def load_mpii_head_boxes(path) -> np.ndarray:
    """Head boxes ``(N, 4)`` as ``(x1, y1, x2, y2)`` for PCKh.

    Args:
        path: a SimpleBaseline-layout JSON whose entries carry ``head_box``, a JSON object
            ``{"head_boxes": [[x1, y1, x2, y2], ...]}``, or the official ``gt_valid.mat``
            (``headboxes_src`` of shape ``(2, 2, N)``; needs scipy).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(mpii_not_found_message(path, "head-box file"))
    if path.suffix.lower() == ".mat":
        try:
            from scipy.io import loadmat
        except ImportError:
            raise UserError(f"reading {path} needs scipy (`pip install scipy`), or give head boxes as JSON "
                            "({'head_boxes': [[x1, y1, x2, y2], ...]})") from None
        try:
            hb = np.asarray(loadmat(str(path))["headboxes_src"], dtype=np.float64)  # (2, 2, N)
        except (KeyError, ValueError, OSError) as exc:
            raise UserError(f"{path} is not MPII's gt_valid.mat (no readable 'headboxes_src'): {exc}") from None
        return np.concatenate([hb[0].T, hb[1].T], axis=1)  # (N, 4)
    data = read_json(path, what="MPII head-box file")
    try:
        if isinstance(data, dict):
            boxes = data["head_boxes"]
        else:
            boxes = [a["head_box"] for a in data]
        out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} has no head boxes: expected 'head_box': [x1, y1, x2, y2] in every entry, "
                        "or {'head_boxes': [...]}") from None
    return out


def mpii_head_sizes(head_boxes) -> np.ndarray:
    """PCKh normaliser ``(N,)``: ``0.6 * ||(x2, y2) - (x1, y1)||`` of each head box ``(N, 4)``."""
    b = np.asarray(head_boxes, dtype=np.float64).reshape(-1, 4)
    return HEAD_SIZE_FACTOR * np.linalg.norm(b[:, 2:] - b[:, :2], axis=1)


def pckh_metrics(pred: dict, dataset) -> dict[str, float]:
    """PCKh@0.5 (``PCKh``) and PCKh@0.1 in % of predictions ``{"index", "keypoints (N, K, 2)"}`` with the dataset's head boxes."""
    from ikd_edu import evaluate as E

    index = pred["index"]
    gt = dataset.rec_joints[index]  # (N, K, 3)
    sizes = E.head_size_from_box(dataset.head_boxes[index])
    at05 = E.pckh(pred["keypoints"], gt[..., :2], gt[..., 2], sizes, threshold=0.5)
    at01 = E.pckh(pred["keypoints"], gt[..., :2], gt[..., 2], sizes, threshold=0.1)
    return {"PCKh": at05["mean"], "PCKh@0.1": at01["mean"]}
