"""Evaluation: OKS, OKS-NMS, rescoring, COCO keypoint AP (pycocotools) and MPII PCKh.

Axes: **N** predicted instances, **M** ground-truth instances, **K** joints.

The COCO pipeline follows the SimpleBaseline reference exactly::

    heatmaps --decode--> keypoints (N,K,2) in image px + maxvals (N,K)
      --rescore--> score = box_score * mean(maxvals[maxvals > 0.2])
      --OKS-NMS 0.9 per image--> kept instances
      --keypoints_to_coco_results--> [{"image_id", "category_id", "keypoints", "score"}]
      --coco_keypoint_eval--> {"AP", "AP50", ..., "ARL"}   (pycocotools COCOeval('keypoints'))

Object Keypoint Similarity (the IoU of keypoints), as in pycocotools ``computeOks``::

    OKS(pred, gt) = mean over labelled GT joints k (v_k > 0) of exp(-e_k)
    e_k = d_k^2 / (2 * s^2 * (2 sigma_k)^2),   s^2 = gt area (+ eps)

with ``d_k`` the pixel distance between predicted and GT joint k and ``sigma_k`` the
per-joint constants from :data:`ikd_edu.skeleton.COCO` (``sigmas_array()``).

Everything here is plain float64 numpy (evaluation is tiny next to a forward pass); torch
tensors are accepted and moved to the CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io as _io
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ikd_edu.errors import UserError
from ikd_edu.skeleton import COCO, MPII, Skeleton

#: Names of the ten numbers COCOeval('keypoints').summarize() prints, in its order.
COCO_METRICS = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")

#: MPII's head-size factor: head size = SC_BIAS * diagonal of the head box.
SC_BIAS = 0.6


def _as_array(x: Any, name: str, ndim: int | None = None, dtype=np.float64) -> np.ndarray:
    """numpy float64 copy of an array-like or (any-device) torch tensor, with a shape check."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=dtype)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(arr.shape)}")
    return arr


def _sigmas(sigmas: Any, num_joints: int) -> np.ndarray:
    """Per-joint OKS sigmas (K,): the given ones, else COCO's (only for K = 17)."""
    s = COCO.sigmas_array() if sigmas is None else _as_array(sigmas, "sigmas", 1)
    if s.shape[0] != num_joints:
        raise ValueError(
            f"OKS needs one sigma per joint: got {s.shape[0]} sigmas for {num_joints} joints "
            "(COCO has 17; pass sigmas=... for another skeleton)"
        )
    return s


# --------------------------------------------------------------------------------------
# OKS
# --------------------------------------------------------------------------------------
def oks(
    gt_keypoints: Any,
    gt_areas: Any,
    pred_keypoints: Any,
    sigmas: Any = None,
    gt_boxes: Any = None,
) -> np.ndarray:
    """OKS of every prediction against every ground truth, exactly pycocotools' ``computeOks``.

    Args:
        gt_keypoints: (M, K, 3) GT ``x, y, v`` in image pixels (v: 0 unlabelled, 1, 2).
        gt_areas: (M,) GT areas in px^2 (COCO's segment ``area``; this is the ``s^2``).
        pred_keypoints: (N, K, 2) (or (N, K, 3); the third column is ignored) in image px.
        sigmas: (K,) per-joint constants; default ``COCO.sigmas_array()``.
        gt_boxes: optional (M, 4) GT boxes ``x, y, w, h``. Only used for a GT with no
            labelled joint (all v = 0): pycocotools then measures each predicted joint's
            distance to the GT box grown by its own size on every side
            (``[x - w, x + 2w] x [y - h, y + 2h]``) and averages over all K joints.
            Without ``gt_boxes`` such a GT has OKS 0 with every prediction.

    Returns:
        (N, M) float64 matrix; ``out[i, j]`` = OKS(prediction i, GT j)::

            vars_k = (2 sigma_k)^2
            e_ijk  = d_ijk^2 / vars_k / (area_j + eps) / 2        (eps = np.spacing(1))
            OKS_ij = sum_k [v_jk > 0] exp(-e_ijk) / #{k: v_jk > 0}
    """
    gt = _as_array(gt_keypoints, "gt_keypoints", 3)  # (M, K, 3)
    pred = _as_array(pred_keypoints, "pred_keypoints", 3)[..., :2]  # (N, K, 2)
    areas = _as_array(gt_areas, "gt_areas", 1)  # (M,)
    m, k = gt.shape[0], gt.shape[1]
    if gt.shape[2] != 3:
        raise ValueError(f"gt_keypoints must be (M, K, 3) x y v, got {tuple(gt.shape)}")
    if pred.shape[1] != k:
        raise ValueError(f"pred_keypoints has {pred.shape[1]} joints, ground truth {k}")
    if areas.shape[0] != m:
        raise ValueError(f"gt_areas has {areas.shape[0]} entries for {m} ground truths")
    variances = (2.0 * _sigmas(sigmas, k)) ** 2  # (K,)

    dx = pred[:, None, :, 0] - gt[None, :, :, 0]  # (N, M, K)
    dy = pred[:, None, :, 1] - gt[None, :, :, 1]  # (N, M, K)
    labelled = gt[:, :, 2] > 0  # (M, K)
    has_label = labelled.any(axis=1)  # (M,)
    if gt_boxes is not None and not has_label.all():
        boxes = _as_array(gt_boxes, "gt_boxes", 2)  # (M, 4) x y w h
        x0 = boxes[:, 0] - boxes[:, 2]  # (M,)
        x1 = boxes[:, 0] + 2 * boxes[:, 2]
        y0 = boxes[:, 1] - boxes[:, 3]
        y1 = boxes[:, 1] + 2 * boxes[:, 3]
        px, py = pred[:, None, :, 0], pred[:, None, :, 1]  # (N, 1, K)
        bdx = np.maximum(0.0, x0[None, :, None] - px) + np.maximum(0.0, px - x1[None, :, None])
        bdy = np.maximum(0.0, y0[None, :, None] - py) + np.maximum(0.0, py - y1[None, :, None])
        dx = np.where(has_label[None, :, None], dx, bdx)
        dy = np.where(has_label[None, :, None], dy, bdy)
        # A GT without labels averages over all K joints (pycocotools' e has all K entries).
        joint_mask = np.where(has_label[:, None], labelled, True)  # (M, K)
    else:
        joint_mask = labelled  # a GT without labels gets 0 / max(0, 1) = 0

    e = (dx**2 + dy**2) / variances / (areas[None, :, None] + np.spacing(1)) / 2  # (N, M, K)
    weights = joint_mask[None].astype(np.float64)  # (1, M, K)
    count = np.maximum(weights.sum(axis=2), 1.0)  # (1, M)
    return (np.exp(-e) * weights).sum(axis=2) / count  # (N, M)


def instance_oks(gt: Any, area: float, pred: Any, sigmas: Any = None, gt_box: Any = None) -> float:
    """OKS of one prediction (K, 2) against one GT (K, 3) ``x y v`` with area ``area`` (px^2)."""
    gt_arr = _as_array(gt, "gt", 2)[None]  # (1, K, 3)
    pred_arr = _as_array(pred, "pred", 2)[None]  # (1, K, 2)
    boxes = None if gt_box is None else _as_array(gt_box, "gt_box", 1)[None]
    return float(oks(gt_arr, [float(area)], pred_arr, sigmas, boxes)[0, 0])


# --------------------------------------------------------------------------------------
# OKS-NMS and rescoring (SimpleBaseline lib/nms/nms.py and lib/dataset/coco.py)
# --------------------------------------------------------------------------------------
def pairwise_oks(
    keypoints: Any, areas: Any, sigmas: Any = None, in_vis_thresh: float | None = None
) -> np.ndarray:
    """OKS between predictions, as the reference ``oks_iou`` used by OKS-NMS.

    Args:
        keypoints: (N, K, 3) ``x, y, score``.
        areas: (N,) instance areas (px^2).
        in_vis_thresh: None (reference default in evaluation): all K joints count. Else only
            joints whose score in the *compared* instance ``j`` exceeds it (the reference
            writes ``list(vg > t) and list(vd > t)``, which Python evaluates to ``vd > t``).

    Returns:
        (N, N) ``out[i, j]`` = mean_k exp(-d_ijk^2 / vars_k / ((a_i + a_j)/2 + eps) / 2),
        i.e. the GT area of :func:`oks` replaced by the mean area of the pair.
    """
    kp = _as_array(keypoints, "keypoints", 3)  # (N, K, 3)
    a = _as_array(areas, "areas", 1)  # (N,)
    variances = (2.0 * _sigmas(sigmas, kp.shape[1])) ** 2  # (K,)
    d2 = ((kp[:, None, :, :2] - kp[None, :, :, :2]) ** 2).sum(-1)  # (N, N, K)
    mean_area = (a[:, None] + a[None, :]) / 2  # (N, N)
    e = d2 / variances / (mean_area[..., None] + np.spacing(1)) / 2  # (N, N, K)
    if in_vis_thresh is None:
        return np.exp(-e).mean(axis=2)
    mask = np.broadcast_to(kp[None, :, :, 2] > in_vis_thresh, e.shape).astype(np.float64)
    count = mask.sum(axis=2)  # (N, N)
    return np.where(count > 0, (np.exp(-e) * mask).sum(axis=2) / np.maximum(count, 1), 0.0)


def oks_nms(
    keypoints: Any,
    scores: Any,
    areas: Any,
    threshold: float = 0.9,
    sigmas: Any = None,
    in_vis_thresh: float | None = None,
) -> list[int]:
    """Greedy OKS non-maximum suppression (one image): indices of the kept instances.

    Repeat: keep the highest-scoring remaining instance, drop every remaining instance
    whose :func:`pairwise_oks` with it is **above** ``threshold`` (the reference keeps
    ``oks <= threshold``). Ties in score are broken by the lower index (stable sort; the
    reference's ``argsort()[::-1]`` leaves tie order unspecified).

    Args:
        keypoints: (N, K, 3) ``x, y, joint score`` in image px.
        scores: (N,) instance scores.
        areas: (N,) instance areas (px^2).

    Returns:
        Kept indices into the inputs, highest score first.
    """
    kp = _as_array(keypoints, "keypoints", 3)
    s = _as_array(scores, "scores", 1)
    if kp.shape[0] == 0:
        return []
    overlap = pairwise_oks(kp, areas, sigmas, in_vis_thresh)  # (N, N)
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[overlap[i, rest] <= threshold]
    return keep


def rescore(maxvals: Any, box_scores: Any, in_vis_thresh: float = 0.2) -> np.ndarray:
    """Reference instance score: ``box_score * mean of the joint scores above in_vis_thresh``.

    Args:
        maxvals: (N, K) heatmap peak values (joint confidences).
        box_scores: (N,) detector (or GT-box) scores.

    Returns:
        (N,) ``box_score_n * sum_k [c_nk > t] c_nk / #{k: c_nk > t}``; the mean is 0 when no
        joint clears the threshold (so such an instance scores 0).
    """
    c = _as_array(maxvals, "maxvals", 2)  # (N, K)
    b = _as_array(box_scores, "box_scores", 1)  # (N,)
    confident = c > in_vis_thresh  # (N, K)
    count = confident.sum(axis=1)  # (N,)
    mean_conf = np.where(count > 0, (c * confident).sum(axis=1) / np.maximum(count, 1), 0.0)
    return b * mean_conf


def keypoints_to_coco_results(
    image_ids: Any,
    keypoints: Any,
    maxvals: Any,
    box_scores: Any,
    areas: Any,
    in_vis_thresh: float = 0.2,
    oks_nms_thresh: float | None = 0.9,
    category_id: int = 1,
    sigmas: Any = None,
) -> list[dict]:
    """Rescore, OKS-NMS per image and format as a COCO keypoint results list.

    Args:
        image_ids: (N,) COCO image id of each instance (crop).
        keypoints: (N, K, 2) predictions in image pixels.
        maxvals: (N, K) joint confidences (heatmap peaks).
        box_scores: (N,) box scores (1 for GT boxes).
        areas: (N,) instance areas used by OKS-NMS, taken as given. The reference passes
            ``scale[0] * scale[1] * 200 * 200`` (the padded box area; pixel_std 200).
        in_vis_thresh: joint-confidence threshold of :func:`rescore` (reference 0.2).
        oks_nms_thresh: OKS-NMS threshold (reference 0.9); None skips NMS.

    Returns:
        One dict per kept instance, images in order of first appearance, each image's
        instances in NMS order: ``{"image_id": int, "category_id": int,
        "keypoints": [x1, y1, c1, ..., xK, yK, cK] (maxval as third value), "score": float}``.
    """
    ids = _as_array(image_ids, "image_ids", 1, dtype=np.int64)  # (N,)
    kp = _as_array(keypoints, "keypoints", 3)[..., :2]  # (N, K, 2)
    conf = _as_array(maxvals, "maxvals", 2)  # (N, K)
    boxes = _as_array(box_scores, "box_scores", 1)  # (N,)
    area = _as_array(areas, "areas", 1)  # (N,)
    n = ids.shape[0]
    for name, arr in (("keypoints", kp), ("maxvals", conf), ("box_scores", boxes), ("areas", area)):
        if arr.shape[0] != n:
            raise ValueError(f"{name} has {arr.shape[0]} instances but image_ids has {n}")
    if conf.shape[1] != kp.shape[1]:
        raise ValueError(f"maxvals has {conf.shape[1]} joints, keypoints {kp.shape[1]}")

    scores = rescore(conf, boxes, in_vis_thresh)  # (N,)
    triples = np.concatenate([kp, conf[..., None]], axis=2)  # (N, K, 3) x y c
    results: list[dict] = []
    _, first = np.unique(ids, return_index=True)
    for image_id in ids[np.sort(first)]:
        members = np.flatnonzero(ids == image_id)
        if oks_nms_thresh is None:
            kept = members[np.argsort(-scores[members], kind="stable")]
        else:
            local = oks_nms(triples[members], scores[members], area[members], oks_nms_thresh, sigmas)
            kept = members[local]
        for i in kept:
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_id),
                    "keypoints": [float(v) for v in triples[i].reshape(-1)],
                    "score": float(scores[i]),
                }
            )
    return results


# --------------------------------------------------------------------------------------
# COCO keypoint AP
# --------------------------------------------------------------------------------------
def _quiet(enabled: bool):
    return contextlib.redirect_stdout(_io.StringIO()) if enabled else contextlib.nullcontext()


def load_coco_gt(ann_file_or_coco: Any, quiet: bool = True):
    """A pycocotools ``COCO`` from a path or an existing ``COCO`` (returned as is)."""
    from pycocotools.coco import COCO as CocoApi

    if isinstance(ann_file_or_coco, CocoApi):
        return ann_file_or_coco
    from ikd_edu.io import read_json

    path = Path(ann_file_or_coco)
    data = read_json(path, "annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise UserError(
            f"{path} is not a COCO annotation file (needs 'images' and 'annotations' lists); "
            "pass a person_keypoints_*.json file"
        )
    if not data.get("categories"):
        raise UserError(f"{path} has no 'categories'; add the person category (ikd_edu.skeleton.coco_category())")
    _check_ground_truth(data, str(path))
    gt = CocoApi()
    gt.dataset = data
    with _quiet(quiet):
        gt.createIndex()
    return gt


def coco_subset(gt: Any, image_ids: Any):
    """A pycocotools ``COCO`` holding only the images ``image_ids`` and their annotations.

    ``gt`` is a ``COCO`` or its dataset dict (the annotation JSON). Scoring predictions for a
    subset of the images against this (not the full split) keeps the images that were not
    predicted from counting as misses.
    """
    from pycocotools.coco import COCO as CocoApi

    data = gt.dataset if isinstance(gt, CocoApi) else gt
    keep = {int(i) for i in image_ids}
    sub = CocoApi()
    sub.dataset = {**data, "images": [im for im in data["images"] if im.get("id") in keep],
                   "annotations": [a for a in data["annotations"] if a.get("image_id") in keep]}
    with _quiet(True):
        sub.createIndex()
    return sub


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _numbers(values: Any, n: int | None = None) -> bool:
    """A list/tuple of ``n`` (any, if None) real numbers (not bools, not strings)."""
    return isinstance(values, (list, tuple)) and (n is None or len(values) == n) and all(_is_real(v) for v in values)


def _check_ground_truth(data: dict, source: str) -> None:
    """One-line UserErrors for ground truth pycocotools would crash on, or evaluate to n/a (nothing to match)."""
    ids = set()
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not _is_int(im.get("id")):
            raise UserError(f"{source}: image entry {i} has no integer 'id'; fix the annotation file")
        ids.add(im["id"])
    labelled = 0
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            raise UserError(f"{source}: annotation {i} is not a JSON object; fix the annotation file")
        bad = [k for k in ("id", "image_id", "category_id") if not _is_int(a.get(k))]
        if bad:
            raise UserError(f"{source}: annotation {i} needs integer {', '.join(bad)}; fix the annotation file")
        if a["image_id"] not in ids:
            raise UserError(f"{source}: annotation {a['id']} refers to image {a['image_id']}, which is not in 'images'")
        kps = a.get("keypoints", [])
        if not _numbers(kps) or len(kps) % 3:
            raise UserError(f"{source}: annotation {a['id']} has malformed keypoints (needs a flat x, y, v list of numbers)")
        if not all(math.isfinite(v) for v in kps):
            raise UserError(f"{source}: annotation {a['id']} has NaN/inf keypoints")
        if "bbox" in a and not (_numbers(a["bbox"], 4) and all(math.isfinite(v) for v in a["bbox"])):
            raise UserError(f"{source}: annotation {a['id']} has a malformed bbox (needs 4 finite numbers x, y, w, h)")
        if "area" in a and not (_is_real(a["area"]) and math.isfinite(a["area"])):
            raise UserError(f"{source}: annotation {a['id']} has a non-numeric area")
        if not a.get("iscrowd", 0) and any(v > 0 for v in kps[2::3]):
            labelled += 1
    if labelled == 0:
        raise UserError(f"{source}: the ground truth has no person with a labelled joint (non-crowd, v > 0), so "
                        "there is nothing to evaluate against; pass a person_keypoints_*.json with keypoints")


def _check_results(results: list, gt, num_joints: int, source: str) -> None:
    """One-line UserErrors for results pycocotools would reject with an assert or a crash.

    Each entry must be an object with an integer ``image_id`` and ``category_id`` known to
    the ground truth, ``3 K`` finite numbers as ``keypoints``, a finite number as ``score``
    and, if present, a ``bbox`` of 4 finite numbers.
    """
    image_ids = set(gt.getImgIds())
    cat_ids = set(gt.getCatIds())
    unknown: list = []
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise UserError(f"{source}: entry {i} is not an object; expected a list of result dicts")
        missing = [key for key in ("image_id", "category_id", "keypoints", "score") if key not in r]
        if missing:
            raise UserError(
                f"{source}: entry {i} lacks {missing}; each result needs image_id, category_id, "
                "keypoints (flat x,y,score list) and score"
            )
        for key in ("image_id", "category_id"):
            if not _is_int(r[key]):
                raise UserError(f"{source}: entry {i} has {key} {str(r[key])[:40]!r} of type {type(r[key]).__name__}; "
                                "it must be an integer id of the annotation file")
        kps = r["keypoints"]
        if not isinstance(kps, (list, tuple)) or len(kps) != 3 * num_joints:
            got = len(kps) if isinstance(kps, (list, tuple)) else type(kps).__name__
            raise UserError(
                f"{source}: entry {i} has {got} keypoint values, expected {3 * num_joints} "
                f"({num_joints} joints x (x, y, score)); results of another skeleton?"
            )
        if not _numbers(kps) or not _is_real(r["score"]):
            raise UserError(f"{source}: entry {i} has non-numeric keypoints or score")
        values = np.asarray(kps, dtype=np.float64)
        score = float(r["score"])
        if not (np.isfinite(values).all() and math.isfinite(score)):
            raise UserError(f"{source}: entry {i} has NaN/inf keypoints or score; check the model outputs")
        if "bbox" in r and not (_numbers(r["bbox"], 4) and all(math.isfinite(v) for v in r["bbox"])):
            raise UserError(f"{source}: entry {i} has a malformed bbox {str(r['bbox'])[:40]!r}; it must be 4 finite "
                            "numbers x, y, w, h (or leave it out)")
        if r["image_id"] not in image_ids:
            unknown.append(r["image_id"])
        if r["category_id"] not in cat_ids:
            raise UserError(
                f"{source}: entry {i} has category_id {r['category_id']!r}, the annotations have "
                f"{sorted(cat_ids)}"
            )
    if unknown:
        shown = sorted(set(unknown), key=str)[:5]
        raise UserError(
            f"{source}: {len(set(unknown))} image id(s) not in the annotation file (e.g. {shown}); "
            "were the results made for another split (train vs val)?"
        )


def coco_keypoint_eval(
    ann_file_or_coco: Any,
    results: list[dict] | str | os.PathLike,
    quiet: bool = True,
    sigmas: Any = None,
) -> dict[str, float]:
    """COCO keypoint AP/AR with pycocotools' ``COCOeval(iouType='keypoints')``.

    COCO's rules apply as is: at most 20 detections per image (by score); crowd GT
    (``iscrowd=1``) and GT with ``num_keypoints == 0`` are *ignored* (a prediction matched to
    one is neither TP nor FP); AP is the 101-point interpolated precision averaged over OKS
    thresholds .50:.05:.95; APM/APL restrict to GT areas 32^2..96^2 / > 96^2.

    Args:
        ann_file_or_coco: a COCO keypoint annotation file or a pycocotools ``COCO`` object.
        results: result dicts (see :func:`keypoints_to_coco_results`) or a JSON file of them.
            The list is copied: pycocotools' ``loadRes`` would otherwise add keys to it.
        quiet: hide pycocotools' prints (the summary table included).
        sigmas: (K,) OKS sigmas; default ``COCO.sigmas_array()``.

    Returns:
        ``{"AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL"}`` as floats
        in 0..1. pycocotools reports -1 for an area range without GT (e.g. APM when every
        person is large); that is kept. **Empty results** (a model that found no one) give
        0.0 for every metric rather than an error: pycocotools cannot load an empty list.

    Raises:
        UserError: unreadable files, results with unknown image ids / categories, a
        keypoint list whose length is not 3 K, or NaN values.
    """
    from pycocotools.cocoeval import COCOeval

    from ikd_edu.io import read_json

    sig = COCO.sigmas_array() if sigmas is None else _as_array(sigmas, "sigmas", 1)
    num_joints = sig.shape[0]
    gt = load_coco_gt(ann_file_or_coco, quiet)
    if not any(not a.get("iscrowd", 0) and any(v > 0 for v in a.get("keypoints", [])[2::3])
               for a in gt.dataset.get("annotations", [])):
        raise UserError("the ground truth has no person with a labelled joint (non-crowd, v > 0): there is nothing "
                        "to evaluate against; pass a person_keypoints_*.json with keypoints")
    for cat in gt.dataset.get("categories", []):
        names = cat.get("keypoints")
        if names is not None and len(names) != num_joints:
            raise UserError(
                f"the annotation category {cat.get('name')!r} has {len(names)} keypoints but the "
                f"OKS sigmas cover {num_joints}; pass sigmas for this skeleton"
            )
    source = "results"
    if isinstance(results, (str, os.PathLike)):
        source = str(results)
        results = read_json(results, "results file", expect=list, fix="pass the keypoint results JSON (a list of dicts)")
    if not isinstance(results, list):
        raise UserError(f"{source} must be a JSON list of result dicts, got {type(results).__name__}")
    if len(results) == 0:
        return {name: 0.0 for name in COCO_METRICS}
    _check_results(results, gt, num_joints, source)

    with _quiet(quiet):
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(gt, dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = sig
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(COCO_METRICS, evaluator.stats)}


def format_metrics(metrics: dict[str, float]) -> str:
    """Two-column text table of :func:`coco_keypoint_eval`'s dict (values x100; -1 -> n/a)."""
    lines = [f"{'metric':<6}  {'x100':>6}"]
    for name, value in metrics.items():
        shown = "n/a" if value < 0 else f"{100 * value:.1f}"
        lines.append(f"{name:<6}  {shown:>6}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# MPII PCKh
# --------------------------------------------------------------------------------------
def head_size_from_box(head_boxes: Any) -> np.ndarray:
    """MPII head size: ``SC_BIAS (0.6) * ||(x2 - x1, y2 - y1)||`` of each head box (N, 4) ``x1 y1 x2 y2``."""
    b = _as_array(head_boxes, "head_boxes", 2)  # (N, 4)
    return SC_BIAS * np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])  # (N,)


def pckh(
    pred: Any,
    gt: Any,
    visible: Any,
    head_sizes: Any,
    threshold: float = 0.5,
    skeleton: Skeleton | None = None,
    mean_excludes: Sequence[str] | None = None,
) -> dict:
    """PCKh: % of visible joints within ``threshold * head size`` of the ground truth.

    MPII convention (the SimpleBaseline / official evaluation)::

        head_size_n = 0.6 * diagonal of person n's head box      (head_size_from_box)
        correct_nk  = ||pred_nk - gt_nk|| / head_size_n <= threshold
        PCKh_k      = 100 * sum_n visible_nk correct_nk / sum_n visible_nk
        mean        = sum_k count_k PCKh_k / sum_k count_k over joints not in mean_excludes

    For MPII the reported mean leaves out pelvis and thorax (the default when the skeleton is
    MPII; pass ``mean_excludes=()`` to keep every joint). Usage::

        sizes = head_size_from_box(head_boxes)
        at_05 = pckh(pred, gt, visible, sizes)["mean"]                 # PCKh@0.5
        at_01 = pckh(pred, gt, visible, sizes, threshold=0.1)["mean"]  # PCKh@0.1

    Args:
        pred, gt: (N, K, 2) joints in the same pixel frame.
        visible: (N, K) 1 where the GT joint is annotated (MPII ``joints_vis``).
        head_sizes: (N,) head sizes in px (already x 0.6).
        skeleton: names the joints; default MPII when K = 16, else none.

    Returns:
        ``{"per_joint": [K] % (nan for a joint never visible), "mean": %, "counts": [K],
        "threshold": t, "joints": names or None}``.
    """
    p = _as_array(pred, "pred", 3)[..., :2]  # (N, K, 2)
    g = _as_array(gt, "gt", 3)[..., :2]  # (N, K, 2)
    vis = _as_array(visible, "visible", 2) > 0  # (N, K)
    sizes = _as_array(head_sizes, "head_sizes", 1)  # (N,)
    if p.shape != g.shape or vis.shape != p.shape[:2] or sizes.shape[0] != p.shape[0]:
        raise ValueError(
            f"pckh shapes disagree: pred {p.shape}, gt {g.shape}, visible {vis.shape}, head_sizes {sizes.shape}"
        )
    used = vis.any(axis=1)
    if (sizes[used] <= 0).any() or not np.isfinite(sizes[used]).all():
        raise UserError("pckh: head sizes must be positive (0.6 x head-box diagonal); check the head boxes")
    k = p.shape[1]
    if skeleton is None and k == MPII.num_joints:
        skeleton = MPII
    names = list(skeleton.joints) if skeleton is not None else None
    if mean_excludes is None:
        mean_excludes = ("pelvis", "thorax") if skeleton is MPII else ()

    safe = np.where(sizes > 0, sizes, 1.0)  # (N,)
    err = np.linalg.norm(p - g, axis=2) / safe[:, None]  # (N, K) in head sizes
    correct = (err <= threshold) & vis  # (N, K)
    counts = vis.sum(axis=0)  # (K,)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = 100.0 * correct.sum(axis=0) / counts  # (K,)
    include = np.ones(k, dtype=bool)
    for name in mean_excludes:
        if names is None or name not in names:
            raise ValueError(f"mean_excludes names {name!r}, not a joint of this skeleton")
        include[names.index(name)] = False
    weight = counts * include
    mean = float((correct.sum(axis=0) * include).sum() * 100.0 / weight.sum()) if weight.sum() > 0 else float("nan")
    return {
        "per_joint": [float(v) for v in per_joint],
        "mean": mean,
        "counts": [int(c) for c in counts],
        "threshold": float(threshold),
        "joints": names,
    }


def mpii_pckh_of_files(ann_file, results_file, head_box_file=None) -> dict:
    """PCKh@0.5 and @0.1 (%) of an MPII results file against a SimpleBaseline-layout annotation file.

    ``results_file``: a JSON list with one entry per person of ``ann_file``, in the same order,
    each holding ``"joints": [[x, y], ... 16]`` in the annotation file's 1-based MATLAB pixels
    (so the annotation file itself is a valid, perfect results file). Visibility comes from
    ``ann_file``'s ``joints_vis``; head boxes from its ``head_box`` fields or ``gt_valid.mat``
    beside it (:func:`ikd_edu.data.mpii.resolve_head_boxes`).
    """
    from ikd_edu.data.mpii import _load_entries, resolve_head_boxes
    from ikd_edu.io import read_json

    entries = _load_entries(Path(ann_file))
    results = read_json(Path(results_file), what="MPII results file")
    if not isinstance(results, list) or len(results) != len(entries):
        got = f"{len(results)} entries" if isinstance(results, list) else type(results).__name__
        raise UserError(f"{results_file}: expected a JSON list of {len(entries)} entries (one per person of "
                        f"{ann_file}, same order) with 'joints': [[x, y], ...], got {got}")
    k = MPII.num_joints
    try:
        pred = np.asarray([r["joints"] for r in results], dtype=np.float64).reshape(-1, k, 2)
        gt = np.asarray([a["joints"] for a in entries], dtype=np.float64).reshape(-1, k, 2)
        vis = np.asarray([a.get("joints_vis", [1] * k) for a in entries], dtype=np.float64).reshape(-1, k)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"MPII joints must be [[x, y] x {k}] per entry ({type(exc).__name__}: {exc})") from None
    sizes = head_size_from_box(resolve_head_boxes(ann_file, entries, head_box_file))
    return {"PCKh": pckh(pred, gt, vis, sizes, 0.5)["mean"], "PCKh@0.1": pckh(pred, gt, vis, sizes, 0.1)["mean"]}


def _is_mpii_annotation(path) -> bool:
    """An MPII SimpleBaseline annotation file is a JSON list; a COCO one is a dict."""
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return head[:1] == b"["


# --------------------------------------------------------------------------------------
# CLI: ikd-edu eval --ann FILE --results FILE [--out metrics.json]
# --------------------------------------------------------------------------------------
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ann", required=True,
                        help="COCO person_keypoints_*.json, or MPII annotations/valid.json (SimpleBaseline layout)")
    parser.add_argument("--results", required=True,
                        help="COCO keypoint results JSON (list of dicts); MPII: a list of {joints: [[x, y] x 16]} "
                             "per person of --ann, same order, 1-based pixels")
    parser.add_argument("--head-boxes", default=None, metavar="FILE",
                        help="MPII only: head boxes for PCKh [gt_valid.mat beside --ann]")
    parser.add_argument("--out", default=None, help="write the metrics here as JSON (atomic)")
    parser.add_argument("--verbose", action="store_true", help="show pycocotools' own output")


def cli_main(args: argparse.Namespace) -> int:
    from ikd_edu.io import check_output_dir, write_json

    if args.out:  # a folder in the way, a read-only or full disk: said before evaluating
        if Path(args.out).is_dir():
            raise UserError(f"--out {args.out} is a folder; pass a file name such as metrics.json")
        check_output_dir(Path(args.out).parent, what="--out folder")
    if not Path(args.ann).is_file():
        raise UserError(f"annotation file {args.ann} not found")
    if _is_mpii_annotation(args.ann):
        metrics = mpii_pckh_of_files(args.ann, args.results, args.head_boxes)
        print(f"PCKh@0.5  {metrics['PCKh']:6.2f}\nPCKh@0.1  {metrics['PCKh@0.1']:6.2f}")
    else:
        metrics = coco_keypoint_eval(args.ann, args.results, quiet=not args.verbose)
        print(format_metrics(metrics))
    if args.out:
        write_json(args.out, metrics)
        print(f"wrote {args.out}")
    return 0
