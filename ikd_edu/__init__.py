"""ikd-edu: Integral Knowledge Distillation for multi-person pose estimation, as a course.

Layers (imports run one way, down this list; ``tests/test_layers.py`` checks it)::

    1  skeleton.py geometry.py io.py errors.py validate.py exercise_guard.py _lazy.py _table.py
       _threads.py
                      joints and flip pairs, crop affines, atomic files, one-line errors, input checks
    2  codec.py codec_fast.py         keypoints <-> heatmaps, flip-back (CPU fast paths)
    3  data/ evaluate.py              COCO / MPII / synthetic datasets, augmentation, checks (uses codec),
                                      the dataset registry, and their metrics: COCO AP (pycocotools), PCKh
    4  models/                        SimpleBaseline teacher, students, feature taps, checkpoints
    5  distill/                       logit, feature, structure distillation and their integral sum
    6  profile.py inference.py        params / MACs / latency, the one predict pass
    7  train/                         configs, the training loop, distributed helpers (uses profile)
    8  application: apps/ (quickstart, ablation), course.py, browse.py, explain.py, cli.py,
       exercises.py, assignments.py, viz/ - the only modules that import ``viz``

A module may import from its own layer and the layers above it in this list, never from a
later one; ``data`` never imports ``train``. This file is the public facade: every name below
is imported on first use, so ``import ikd_edu`` stays cheap (no torch) and can set
``OMP_WAIT_POLICY`` before torch starts::

    from ikd_edu import COCO, build_model, encode_heatmaps, IntegralKD, viz
"""
import os as _os

__version__ = "0.1.0"

# libgomp (torch's CPU threads) spins ~300,000 times before a waiting thread sleeps: on busy
# cores every op then waits for descheduled spinning threads; never spinning (PASSIVE) makes
# idle cores wake a thread for every small op. A short spin does well on both
# (benchmarks/README.md). Only takes effect when ikd_edu is imported before torch; an explicit
# OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from ikd_edu._lazy import lazy_exports as _lazy_exports  # noqa: E402 (after the environment)

# name -> defining module (a module whose last part is the name: the module itself).
# Every name the notebooks use; notebooks also import ikd_edu.course and ikd_edu.exercises directly.
_EXPORTS = {
    # layer 1
    "COCO": "ikd_edu.skeleton",
    "MPII": "ikd_edu.skeleton",
    "affine_points": "ikd_edu.geometry",
    "get_affine_transform": "ikd_edu.geometry",
    "load_torch": "ikd_edu.io",
    "UserError": "ikd_edu.errors",
    # layer 2
    "encode_heatmaps": "ikd_edu.codec",
    "decode_heatmaps": "ikd_edu.codec",
    "decode_to_image": "ikd_edu.codec",
    "flip_back": "ikd_edu.codec",
    "flip_test_average": "ikd_edu.codec",
    # layer 3
    "synthetic": "ikd_edu.data.synthetic",
    "load_rgb": "ikd_edu.data.images",
    "flip_joints": "ikd_edu.data.transforms",
    # layer 4
    "build_model": "ikd_edu.models",
    # layer 5
    "JointsMSELoss": "ikd_edu.distill.ground_truth",
    "LogitDistillation": "ikd_edu.distill.logit",
    "heatmap_kl": "ikd_edu.distill.logit",
    "FeatureDistillation": "ikd_edu.distill.feature",
    "pairwise_affinity": "ikd_edu.distill.structure",
    "affinity_loss": "ikd_edu.distill.structure",
    "joint_relations": "ikd_edu.distill.structure",
    "relation_loss": "ikd_edu.distill.structure",
    "pooled_grid_size": "ikd_edu.distill.structure",
    "IntegralKD": "ikd_edu.distill.integral",
    "DECAYS": "ikd_edu.distill.integral",
    "decay_factor": "ikd_edu.distill.integral",
    # layer 6
    "evaluate": "ikd_edu.evaluate",
    "coco_subset": "ikd_edu.evaluate",
    "count_params": "ikd_edu.profile",
    "count_macs": "ikd_edu.profile",
    "measure_latency": "ikd_edu.profile",
    "profile_models": "ikd_edu.profile",
    "format_table": "ikd_edu.profile",
    "predict": "ikd_edu.inference",
    # layer 7
    "build_criterion": "ikd_edu.train.engine",
    "released": "ikd_edu.train.released",
    # layer 8
    "quickstart": "ikd_edu.apps.quickstart",
    "VARIANTS": "ikd_edu.apps.ablation",
    "cli": "ikd_edu.cli",
    "browse": "ikd_edu.browse",
    "explain_joint": "ikd_edu.explain",
    "compare_teacher_student": "ikd_edu.explain",
    "viz": "ikd_edu.viz",
    "as_display_image": "ikd_edu.viz.skeleton",
    "joint_label": "ikd_edu.viz.skeleton",
    "AffinityExplorer": "ikd_edu.viz.widgets",
}

__getattr__, __dir__, __all__ = _lazy_exports(__name__, _EXPORTS, globals())
