"""The one table of datasets: how to build one, its skeleton, its metric and its preset.

``data.dataset`` names an entry; the config (allowed values, joint count K), the engine
(:func:`ikd_edu.train.engine.build_dataset`, ``score_predictions``, ``primary_metric``)
and evaluation read this table instead of branching on the name.

Adding a dataset = one module with its ``Dataset`` class + one :func:`register_dataset` call
+ its test. An entry's ``build(cfg, train, ann, images, common) -> Dataset`` gets the
annotation file and image folder of the split and the keyword arguments every
``TopDownDataset`` takes (``common``: input/heatmap size, sigma, train, augment, ...);
``score(pred, dataset, results_path) -> metrics`` gets the merged predictions
(``index``, ``image_id``, ``keypoints (N, K, 2)``, ``maxvals``, ``box_score``, ``area``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ikd_edu._table import Table
from ikd_edu.skeleton import COCO, MPII, Skeleton

__all__ = ["DatasetSpec", "register_dataset", "unregister_dataset", "registered_dataset", "get_dataset",
           "dataset_names"]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset.

    Attributes:
        name: the ``data.dataset`` value.
        build: ``(cfg, train, ann, images, common) -> Dataset`` (see the module docstring).
        skeleton: joint layout (K = ``skeleton.num_joints``).
        score: ``(pred, dataset, results_path | None) -> {metric: value}``.
        metric: the metric that picks ``best.pt`` (``"AP"``, ``"PCKh"``).
        default_preset: the bundled preset for it.
        prepare: ``(cfg, progress) -> None`` run once (rank 0) before building, e.g. generate the data.
    """

    name: str
    build: Callable[..., Any]
    skeleton: Skeleton
    score: Callable[..., dict]
    metric: str
    default_preset: str = ""
    prepare: Callable[[Any, bool], None] | None = None

    @property
    def num_joints(self) -> int:
        return self.skeleton.num_joints


_DATASETS = Table("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return _DATASETS.add(spec.name, spec)


def unregister_dataset(name: str) -> None:
    _DATASETS.pop(name)


def registered_dataset(spec: DatasetSpec):
    """``with registered_dataset(DatasetSpec(...)):`` the dataset exists inside the block only (tests)."""
    return _DATASETS.temporarily(spec.name, spec, register_dataset)


def get_dataset(name: str) -> DatasetSpec:
    return _DATASETS.lookup(name)


def dataset_names() -> tuple[str, ...]:
    return tuple(_DATASETS)


# --------------------------------------------------------------------------------------
# The built-in datasets
# --------------------------------------------------------------------------------------
def build_coco(cfg, train: bool, ann: Path, images: Path, common: dict):
    """A COCO-layout set; validation with ``data.val_det_file`` detections when given."""
    from ikd_edu.data.coco import TopDownCocoDataset
    from ikd_edu.errors import UserError

    d = cfg.data
    det = None
    if not train and d.val_det_file:
        det = Path(d.val_det_file)
        det = det if det.is_absolute() or det.is_file() else Path(d.root) / det
        if not det.is_file():
            raise UserError(f"data.val_det_file: detection file {det} not found; set data.val_det_file='' "
                            "to evaluate with ground-truth boxes")
    return TopDownCocoDataset(ann, images, det_file=det, **common)


def score_coco(pred: dict, dataset, results_path: Path | None = None) -> dict:
    """COCO keypoint AP: rescoring + OKS-NMS + pycocotools (:mod:`ikd_edu.evaluate`), metrics in 0..1.

    Optionally writes the COCO results JSON; images without a prediction are left out of
    the ground truth (an evaluated subset is not penalised for the rest).
    """
    import numpy as np

    from ikd_edu import evaluate as E
    from ikd_edu.io import write_json
    from ikd_edu.evaluate import coco_subset

    results = E.keypoints_to_coco_results(pred["image_id"], pred["keypoints"], pred["maxvals"], pred["box_score"],
                                          pred["area"], sigmas=dataset.skeleton.sigmas_array())
    if results_path is not None:
        write_json(results_path, results, indent=None)
    coco = dataset.coco
    image_ids = np.unique(pred["image_id"])
    if len(image_ids) < len(coco.getImgIds()):
        coco = coco_subset(coco, image_ids)
    metrics = E.coco_keypoint_eval(coco, results, sigmas=dataset.skeleton.sigmas_array())
    return {k: float(v) for k, v in metrics.items()}


def _prepare_synthetic(cfg, progress: bool) -> None:
    from ikd_edu.data.synthetic import ensure_synthetic

    d = cfg.data
    ensure_synthetic(Path(d.root), d.synthetic_images, seed=d.synthetic_seed, val_images=d.synthetic_val_images,
                     image_size=tuple(d.synthetic_image_size), progress=progress)


def _build_mpii(cfg, train: bool, ann: Path, images: Path, common: dict):
    from ikd_edu.data.mpii import TopDownMpiiDataset

    return TopDownMpiiDataset(ann, images, **common)


def _score_mpii(pred: dict, dataset, results_path: Path | None = None) -> dict:
    from ikd_edu.data.mpii import pckh_metrics

    return pckh_metrics(pred, dataset)


register_dataset(DatasetSpec("coco", build_coco, COCO, score_coco, "AP", default_preset="coco-r50-256x192"))
register_dataset(DatasetSpec("mpii", _build_mpii, MPII, _score_mpii, "PCKh", default_preset="mpii-r50-256x256"))
register_dataset(DatasetSpec("synthetic", build_coco, COCO, score_coco, "AP", default_preset="quick",
                             prepare=_prepare_synthetic))
