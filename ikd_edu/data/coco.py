"""COCO keypoints as a top-down dataset: one item = one person crop + its target heatmaps.

Records follow the SimpleBaseline reference (``lib/dataset/coco.py``):

* **ground-truth boxes** (training, and evaluation with GT boxes): one record per person
  annotation that is a person (``category_id`` of the keypoint category), not a crowd, has
  at least one labelled joint, and whose box, clipped to the image (the reference
  ``_sanitize``: ``x1 = max(0, x)``, ``x2 = min(width - 1, x1 + max(0, w - 1))``, same for y),
  is not empty. Records with malformed data (NaN, wrong keypoint count, keypoints outside the
  image, unknown image, ...) are skipped and counted. :func:`parse_coco_keypoints` is the one
  place that decides; ``ikd-edu data check`` reports exactly what it skips.
* **detection boxes** (evaluation): one record per entry of a COCO detection-results file
  (``[{image_id, category_id, bbox, score}]``) with ``category_id == 1`` and
  ``score >= det_score_thresh``; joints are all zero and ``box_score`` is the detector score.

Every box becomes ``center, scale`` with :func:`ikd_edu.geometry.box_to_center_scale`
(aspect ``W/H`` of the input, ``pixel_std`` 200, padding 1.25).
"""
from __future__ import annotations

import contextlib
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ikd_edu.data.images import load_rgb
from ikd_edu.data.transforms import (CHANNEL_ORDERS, TARGET_WEIGHT_RULES, AugmentConfig, to_network_input,
                                     top_down_sample)
from ikd_edu.errors import UserError
from ikd_edu.geometry import PIXEL_STD, box_to_center_scale
from ikd_edu.io import read_json
from ikd_edu.skeleton import COCO, Skeleton

MAX_EXAMPLES = 3  # examples kept per problem reason


def coco_not_found_message(path: Path, what: str) -> str:
    return (
        f"COCO not found at {path} ({what} missing); run `ikd-edu data synth --out data/synthetic` "
        "for the synthetic set, or download from https://cocodataset.org/#download "
        "(2017 images + annotations) into data/coco/ as data/README.md describes"
    )


@dataclass
class CocoPersons:
    """The usable persons of a COCO keypoint file, and what was left out.

    Attributes (N usable persons, K joints):
        image_ids: ``(N,)`` int64. ann_ids: ``(N,)`` int64.
        boxes: ``(N, 4)`` clean boxes ``(x, y, w, h)`` (clipped to the image).
        joints: ``(N, K, 3)`` float64 ``(x, y, v)`` image pixels.
        areas: ``(N,)`` the annotation's ``area`` (segment area, as OKS uses it).
        images: image id -> ``{"file_name", "width", "height"}`` for the well-formed images.
        n_annotations: annotation entries in the file.
        problems: reason -> count of malformed records (skipped).
        examples: reason -> up to 3 short descriptions (``"annotation id 7 (image 3)"``).
        skipped: reason -> count of records left out by convention (crowd, no labelled
            joint, not a person); not errors.
        num_keypoints: K as the file's category declares it.
    """

    image_ids: np.ndarray
    ann_ids: np.ndarray
    boxes: np.ndarray
    joints: np.ndarray
    areas: np.ndarray
    images: dict[int, dict]
    n_annotations: int
    problems: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    num_keypoints: int = 17

    def add_problem(self, reason: str, example: str) -> None:
        self.problems[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(example)


HOSTILE_PATH = "file_name leaves the image folder (absolute or '..')"


def path_leaves_folder(file_name: str) -> bool:
    """True for an image ``file_name`` that is absolute or climbs out with ``..`` (never read: it could be any file)."""
    from pathlib import PurePosixPath, PureWindowsPath

    unified = file_name.replace("\\", "/")
    return (not file_name or "\x00" in file_name or PurePosixPath(unified).is_absolute()
            or PureWindowsPath(file_name).is_absolute() or bool(PureWindowsPath(file_name).drive)
            or ".." in PurePosixPath(unified).parts)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


_JSON_NUMBERS = {int, float}


def _finite_numbers(values) -> bool | None:
    """True if all finite numbers, False if some NaN/inf, None if not numbers at all."""
    if not isinstance(values, (list, tuple)):
        return None
    if set(map(type, values)) <= _JSON_NUMBERS:  # what json.load gives: checked without a Python-level loop
        # a sum of finite numbers is finite unless it overflows (near 1e308): then look at each
        return math.isfinite(sum(values)) or all(math.isfinite(v) for v in values)
    if not all(_is_number(v) for v in values):
        return None
    return all(math.isfinite(v) for v in values)


def load_coco_json(ann_file, what: str = "COCO keypoint annotation file") -> dict:
    """Read and sanity-check the top level of a COCO keypoints file; UserError if unusable."""
    ann_file = Path(ann_file)
    if not ann_file.exists():
        raise UserError(coco_not_found_message(ann_file, "annotation file"))
    data = read_json(ann_file, what=what)
    if not isinstance(data, dict):
        raise UserError(f"{ann_file} is not a COCO annotation file: expected a JSON object with "
                        f"'images', 'annotations', 'categories', found a {type(data).__name__}")
    missing = [k for k in ("images", "annotations") if not isinstance(data.get(k), list)]
    if missing:
        raise UserError(f"{ann_file} is not a COCO annotation file: no {' / '.join(repr(m) for m in missing)} list")
    if not data["annotations"]:
        raise UserError(f"{ann_file} has no annotations (the 'annotations' list is empty)")
    if not data["images"]:
        raise UserError(f"{ann_file} has no images (the 'images' list is empty)")
    if not any(isinstance(a, dict) and "keypoints" in a for a in data["annotations"]):
        raise UserError(f"{ann_file} has no keypoints: is it an instances_*.json file? "
                        "Use the person_keypoints_*.json file")
    return data


def _keypoint_category(data: dict, num_joints: int, ann_file) -> int:
    """Category id of persons (the category that declares 'keypoints'; default 1)."""
    cats = [c for c in data.get("categories") or [] if isinstance(c, dict)]
    kp_cats = [c for c in cats if isinstance(c.get("keypoints"), list)]
    if not kp_cats:
        return 1
    cat = next((c for c in kp_cats if c.get("name") == "person"), kp_cats[0])
    n = len(cat["keypoints"])
    if n != num_joints:
        raise UserError(f"{ann_file}: the '{cat.get('name')}' category has {n} keypoints but the skeleton "
                        f"expects {num_joints}; pass the matching skeleton (COCO 17, MPII 16)")
    return cat.get("id", 1)


def _keep_valid_images(entries: list, out: CocoPersons) -> None:
    """``out.images[id] = {file_name, width, height}`` for every well-formed image entry; problems counted."""
    images = out.images
    for im in entries:
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            out.add_problem("image entry malformed (needs id, file_name, width, height)", repr(im)[:80])
            continue
        w, h = im.get("width"), im.get("height")
        if not (_is_number(w) and _is_number(h) and w > 0 and h > 0):
            out.add_problem("image entry malformed (needs id, file_name, width, height)", f"image id {im['id']}")
            continue
        if im["id"] in images:
            out.add_problem("duplicate image id", f"image id {im['id']}")
            continue
        if path_leaves_folder(im["file_name"]):
            out.add_problem(HOSTILE_PATH, f"image id {im['id']}: {im['file_name'][:60]!r}")
            continue
        images[im["id"]] = {"file_name": im["file_name"], "width": float(w), "height": float(h)}


def _finite_or_problem(values, out: CocoPersons, where: str, malformed: str, not_finite: str) -> bool:
    """True when ``values`` (a list, or None when already malformed) are finite numbers; else one problem counted."""
    finite = _finite_numbers(values) if values is not None else None
    if finite is None:
        out.add_problem(malformed, where)
    elif not finite:
        out.add_problem(not_finite, where)
    return bool(finite)


def _person(ann, i: int, k: int, person_cat, out: CocoPersons):
    """``(image_id, ann_id, box xywh clipped, joints (K, 3), area)`` of one annotation, or None (counted)."""
    if not isinstance(ann, dict):
        out.add_problem("annotation is not a JSON object", f"annotation #{i}")
        return None
    aid = ann.get("id", i)
    where = f"annotation id {aid} (image {ann.get('image_id')})"
    info = out.images.get(ann.get("image_id")) if isinstance(ann.get("image_id"), int) else None
    if info is None:
        out.add_problem("annotation for unknown image", where)
        return None
    if ann.get("category_id", person_cat) != person_cat:
        out.skipped["not a person"] += 1
        return None
    if ann.get("iscrowd", 0):
        out.skipped["crowd (iscrowd=1)"] += 1
        return None
    kps = ann.get("keypoints")
    if not isinstance(kps, list) or len(kps) != 3 * k:
        n = len(kps) if isinstance(kps, list) else "no"
        out.add_problem(f"wrong keypoint count (expected {3 * k} numbers)", f"{where}: {n} numbers")
        return None
    if not _finite_or_problem(kps, out, where, "non-numeric keypoints", "NaN/inf keypoint coordinates"):
        return None
    kp = np.asarray(kps, dtype=np.float64).reshape(k, 3)
    labelled = kp[:, 2] > 0
    if not labelled.any():
        out.skipped["no labelled joint"] += 1
        return None
    bbox = ann.get("bbox")
    if not _finite_or_problem(bbox if isinstance(bbox, list) and len(bbox) == 4 else None, out, where,
                              "bbox missing or malformed", "NaN/inf bbox"):
        return None
    x, y, bw, bh = bbox
    area = ann.get("area", bw * bh)
    if not _is_number(area) or not math.isfinite(area):
        area = bw * bh
    # reference _sanitize: clip the box to the image
    width, height = info["width"], info["height"]
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1, x1 + max(0.0, bw - 1))
    y2 = min(height - 1, y1 + max(0.0, bh - 1))
    # a box that collapses to a point would give scale 0 (the reference keeps w == 0 or h == 0)
    if area <= 0 or bw <= 0 or bh <= 0:
        out.add_problem("zero-area or negative box", f"{where}: bbox {bbox}")
        return None
    if x2 < x1 or y2 < y1 or (x2 == x1 and y2 == y1):
        out.add_problem("box outside the image", f"{where}: bbox {bbox}")
        return None
    xy = kp[labelled, :2]
    if (xy < 0).any() or (xy[:, 0] > width).any() or (xy[:, 1] > height).any():
        out.add_problem("labelled keypoints outside the image", where)
        return None
    return ann["image_id"], (aid if isinstance(aid, int) else i), [x1, y1, x2 - x1, y2 - y1], kp, float(area)


def parse_coco_keypoints(data: dict, num_joints: int = 17, ann_file="annotations") -> CocoPersons:
    """Validate every image and annotation entry; keep the usable persons.

    The one record filter of ikd-edu: :class:`TopDownCocoDataset` trains on exactly the
    persons kept here and ``ikd-edu data check`` reports exactly what is left out.

    Problems (malformed, skipped and counted): image entry malformed / duplicate id,
    annotation for unknown image, wrong keypoint count, NaN/inf or non-numeric keypoints,
    bbox missing/malformed/NaN, zero-area or negative box, box outside the image, labelled keypoints outside the
    image, an image ``file_name`` that leaves the image folder (absolute, ``..``). Skipped by convention (not errors): not a person, crowd, no labelled joint.
    """
    k = num_joints
    person_cat = _keypoint_category(data, k, ann_file)
    out = CocoPersons(
        image_ids=np.zeros(0, np.int64), ann_ids=np.zeros(0, np.int64), boxes=np.zeros((0, 4)),
        joints=np.zeros((0, k, 3)), areas=np.zeros(0), images={}, n_annotations=len(data["annotations"]),
        num_keypoints=k,
    )
    _keep_valid_images(data["images"], out)
    image_ids, ann_ids, boxes, joints, areas = [], [], [], [], []
    for i, ann in enumerate(data["annotations"]):
        person = _person(ann, i, k, person_cat, out)
        if person is not None:
            for column, value in zip((image_ids, ann_ids, boxes, joints, areas), person):
                column.append(value)
    if joints:
        out.image_ids = np.asarray(image_ids, np.int64)
        out.ann_ids = np.asarray(ann_ids, np.int64)
        out.boxes = np.asarray(boxes, np.float64)
        out.joints = np.stack(joints)
        out.areas = np.asarray(areas, np.float64)
    return out


def load_detections(det_file, images: dict, score_thresh: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, Counter]:
    """Person boxes from a COCO detection-results JSON.

    Returns:
        ``image_ids (M,)`` int64, ``boxes (M, 4)`` xywh, ``scores (M,)`` and a Counter of what
        was skipped (other categories, low score, unknown image, bad box).
    """
    det_file = Path(det_file)
    dets = read_json(det_file, what="detection results file")
    if not isinstance(dets, list):
        raise UserError(f"{det_file} is not a COCO detection-results file: expected a JSON list of "
                        "{image_id, category_id, bbox, score}")
    ids, boxes, scores, skipped = [], [], [], Counter()
    for d in dets:
        if not isinstance(d, dict):
            skipped["not a JSON object"] += 1
            continue
        if d.get("category_id", 1) != 1:
            skipped["not a person"] += 1
            continue
        score, bbox = d.get("score"), d.get("bbox")
        if not _is_number(score) or not (isinstance(bbox, list) and len(bbox) == 4 and _finite_numbers(bbox)):
            skipped["malformed entry"] += 1
            continue
        if score < score_thresh:
            skipped["score below threshold"] += 1
            continue
        if d.get("image_id") not in images:
            skipped["unknown image"] += 1
            continue
        if bbox[2] <= 0 or bbox[3] <= 0:
            skipped["zero-area or negative box"] += 1
            continue
        ids.append(d["image_id"])
        boxes.append(bbox)
        scores.append(float(score))
    if not ids:
        raise UserError(f"{det_file}: no usable person detections (score >= {score_thresh}) for the images "
                        f"of the annotation file; skipped: {dict(skipped)}")
    return np.asarray(ids, np.int64), np.asarray(boxes, np.float64), np.asarray(scores, np.float64), skipped


class TopDownDataset(torch.utils.data.Dataset):
    """Shared item pipeline of the top-down datasets (COCO, MPII).

    Subclasses fill, for N records: ``self.image_paths`` (list of str, per image),
    ``self.rec_image`` ``(N,)`` index into it, ``self.rec_center``/``rec_scale`` ``(N, 2)``,
    ``self.rec_joints`` ``(N, K, 3)``, ``self.rec_image_id``, ``self.rec_box_score``,
    ``self.rec_gt_area`` ``(N,)``.
    """

    def _setup(self, input_size, heatmap_size, sigma: float = 2.0, train: bool = False,
               augment: AugmentConfig | None = None, skeleton: Skeleton = COCO, unbiased_encoding: bool = False,
               target_weight_rule: str = "reference", channel_order: str = "rgb") -> None:
        if target_weight_rule not in TARGET_WEIGHT_RULES:
            raise UserError(f"target_weight_rule: expected one of {', '.join(TARGET_WEIGHT_RULES)}, "
                            f"got {target_weight_rule!r}")
        if channel_order not in CHANNEL_ORDERS:
            raise UserError(f"channel_order: expected one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}")
        self.target_weight_rule = target_weight_rule
        self.channel_order = channel_order  # what the model expects; items' "image" is in this order
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.train = bool(train)
        self.augment = augment if augment is not None else (AugmentConfig() if train else None)
        self.skeleton = skeleton
        self.num_joints = skeleton.num_joints
        self.unbiased_encoding = bool(unbiased_encoding)
        # crop px -> heatmap px (reference feat_stride = image_size / heatmap_size), (x, y)
        self.feat_stride = np.array(
            [self.input_size[1] / self.heatmap_size[1], self.input_size[0] / self.heatmap_size[0]]
        )

    def __len__(self) -> int:
        return len(self.rec_image)

    def _rng(self) -> np.random.Generator:
        # Seeded from torch's generator: reproducible under torch.manual_seed, and different
        # in every DataLoader worker (torch seeds each worker's generator).
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def seeded_rng(self, seed: int) -> np.random.Generator:
        """The generator an item's augmentation draws from when it is read with sample seed ``seed``.

        As :class:`ikd_edu.train.distributed.SeededSamples` reads it (torch's CPU generator seeded
        with ``seed``; ``_rng`` is the item's first draw), without disturbing the global generator:
        for code that needs an item's draws without its pixels (the device pipeline, the crop cache).
        """
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(seed))
            return self._rng()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        if index < 0:
            index += len(self)
        image = load_rgb(self.image_paths[self.rec_image[index]])  # (H, W, 3) uint8

        from ikd_edu.codec import encode_heatmaps
        joints = self.rec_joints[index]  # (K, 3) image px
        s = top_down_sample(
            image, self.rec_center[index], self.rec_scale[index], joints,
            input_size=self.input_size, skeleton=self.skeleton, train=self.train,
            augment=self.augment, rng=self._rng() if self.train else None,
            target_weight_rule=self.target_weight_rule,
        )
        hm_xy = torch.from_numpy(s["joints_crop"] / self.feat_stride).float()[None]  # (1, K, 2)
        heatmaps, target_weight = encode_heatmaps(
            hm_xy, torch.from_numpy(s["visible"])[None], heatmap_size=self.heatmap_size,
            sigma=self.sigma, unbiased=self.unbiased_encoding,
        )
        scale = s["scale"]
        return {
            "image": to_network_input(s["image"], self.channel_order),  # (3, H, W), RGB or BGR
            "heatmaps": heatmaps[0].float(),  # (K, h, w)
            "target_weight": target_weight[0].float().reshape(-1),  # (K,)
            "center": torch.tensor(s["center"], dtype=torch.float32),  # (2,)
            "scale": torch.tensor(scale, dtype=torch.float32),  # (2,)
            "rotation": torch.tensor(s["rotation"], dtype=torch.float32),
            "flipped": torch.tensor(s["flip"]),
            "joints": torch.from_numpy(joints).float(),  # (K, 3) GT image px
            "image_id": torch.tensor(int(self.rec_image_id[index]), dtype=torch.int64),
            "box_score": torch.tensor(float(self.rec_box_score[index]), dtype=torch.float32),
            # reference rescoring area: scale[0] * scale[1] * 200^2 (of the un-augmented box)
            "area": torch.tensor(float(np.prod(self.rec_scale[index]) * PIXEL_STD**2), dtype=torch.float32),
            "gt_area": torch.tensor(float(self.rec_gt_area[index]), dtype=torch.float32),
            "index": torch.tensor(index, dtype=torch.int64),
        }


class TopDownCocoDataset(TopDownDataset):
    """COCO keypoints, one item per person crop.

    Args:
        ann_file: ``person_keypoints_*.json``.
        image_dir: folder with the images (``file_name`` of each image entry).
        input_size: crop ``(H, W)``; heatmap_size: ``(h, w)``; sigma: Gaussian sigma (heatmap px).
        train: sample augmentation (``augment``, default :class:`AugmentConfig`) per item.
        det_file: COCO detection-results JSON; if given, one record per person detection with
            ``score >= det_score_thresh`` (joints zero) instead of one per GT person.
        skeleton: joint layout (``ikd_edu.skeleton.COCO``).
        unbiased_encoding: DARK-style unbiased Gaussian centres (passed to the codec).
        target_weight_rule: ``"reference"`` (default) or ``"inside-crop"``; see
            :data:`ikd_edu.data.transforms.TARGET_WEIGHT_RULES`.
        channel_order: ``"rgb"`` (default) or ``"bgr"`` (the released SimpleBaseline weights):
            the channel order of the items' normalised ``image``.
        image_ids: keep only these images. max_instances: keep the first N records.

    Items: see :meth:`TopDownDataset.__getitem__` and docs/DESIGN.md (``image (3,H,W)``,
    ``heatmaps (K,h,w)``, ``target_weight (K,)``, ``center``, ``scale``, ``rotation``,
    ``joints (K,3)``, ``image_id``, ``box_score``, ``area``, ``gt_area``, ``index``, ``flipped``).

    Attributes: ``num_joints``, ``skeleton``, ``persons`` (:class:`CocoPersons`: what was
    kept/skipped), ``coco`` (pycocotools ``COCO``, built on first use).

    Speed: one item is a handful of small torch ops. Load it in ``DataLoader`` workers (they
    run single-threaded), or call ``torch.set_num_threads(1)`` when loading in the main
    process: on a busy CPU, torch's intra-op threads slow the small per-crop ops down
    (figures: benchmarks/README.md).
    """

    def __init__(
        self,
        ann_file,
        image_dir,
        input_size=(256, 192),
        heatmap_size=(64, 48),
        sigma: float = 2.0,
        train: bool = False,
        augment: AugmentConfig | None = None,
        det_file=None,
        det_score_thresh: float = 0.0,
        skeleton: Skeleton = COCO,
        unbiased_encoding: bool = False,
        image_ids=None,
        max_instances: int | None = None,
        target_weight_rule: str = "reference",
        channel_order: str = "rgb",
    ) -> None:
        self._setup(input_size, heatmap_size, sigma, train, augment, skeleton, unbiased_encoding, target_weight_rule,
                    channel_order)
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        data = load_coco_json(self.ann_file)
        if not self.image_dir.is_dir():
            raise UserError(coco_not_found_message(self.image_dir, "image folder"))
        self.persons = parse_coco_keypoints(data, skeleton.num_joints, self.ann_file)
        del data
        self._coco = None
        p = self.persons
        aspect = self.input_size[1] / self.input_size[0]
        if det_file is None:
            ids, boxes = p.image_ids, p.boxes
            joints, scores, gt_area = p.joints, np.ones(len(ids)), p.areas
            if len(ids) == 0:
                raise UserError(
                    f"{self.ann_file}: no usable person (none with a labelled joint and a valid box); "
                    f"run `ikd-edu data check {self.ann_file} --images {self.image_dir}` to see why"
                )
        else:
            ids, boxes, scores, self.det_skipped = load_detections(det_file, p.images, det_score_thresh)
            joints, gt_area = np.zeros((len(ids), self.num_joints, 3)), np.zeros(len(ids))
        keep = np.ones(len(ids), dtype=bool)
        if image_ids is not None:
            keep &= np.isin(ids, np.asarray(list(image_ids), dtype=np.int64))
        sel = np.flatnonzero(keep)
        if max_instances is not None:
            sel = sel[: int(max_instances)]
        if len(sel) == 0:
            raise UserError(f"{self.ann_file}: no person left after the image_ids / max_instances filter")
        centers, scales = box_to_center_scale(boxes[sel], aspect)
        uniq, rec_image = np.unique(ids[sel], return_inverse=True)
        self.image_paths = [str(self.image_dir / p.images[int(i)]["file_name"]) for i in uniq]
        self.rec_image = rec_image.astype(np.int64)
        self.rec_image_id = ids[sel]
        self.rec_center = centers.numpy()
        self.rec_scale = scales.numpy()
        self.rec_joints = joints[sel].astype(np.float64)
        self.rec_box_score = scores[sel]
        self.rec_gt_area = gt_area[sel]

    @property
    def coco(self):
        """The pycocotools ``COCO`` object of ``ann_file`` (loaded on first use, quietly)."""
        if self._coco is None:
            from pycocotools.coco import COCO as PyCOCO

            data = load_coco_json(self.ann_file)
            coco = PyCOCO()
            coco.dataset = data
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    coco.createIndex()
            except (KeyError, TypeError) as exc:
                raise UserError(f"pycocotools cannot index {self.ann_file}: missing field {exc}") from None
            self._coco = coco
        return self._coco

    def __getstate__(self):  # do not ship the pycocotools index to DataLoader workers
        state = self.__dict__.copy()
        state["_coco"] = None
        return state

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        return (f"TopDownCocoDataset({len(self)} persons in {len(self.image_paths)} images, {mode}, "
                f"input {self.input_size[0]}x{self.input_size[1]}, heatmap {self.heatmap_size[0]}x{self.heatmap_size[1]})")

