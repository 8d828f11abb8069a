"""Distillation losses: one small module per term, and their weighted sum (IKD).

Read in this order (each file's docstring holds its formula, in the notebooks' symbols
``S``/``T``/``G`` student/teacher/ground-truth heatmaps, ``w`` target weights,
``F_s``/``F_t`` features, ``A`` affinity, ``R`` joint relations):

=====================  ==========================================================
``ground_truth.py``    ``JointsMSELoss``: 0.5 x weighted MSE to the labels
``logit.py``           ``LogitDistillation``: (1 - alpha) L_gt + alpha L_kd (FPD)
``feature.py``         ``FeatureDistillation``: 1x1 adapter + MSE, or attention transfer
``structure.py``       ``pairwise_affinity``, ``joint_relations``, ``StructureDistillation``
``integral.py``        ``IntegralKD``: all of the above, weighted, with optional decay
``registry.py``        the table of terms IntegralKD, the config and the CLI read
=====================  ==========================================================
"""
from __future__ import annotations

from ikd_edu._lazy import lazy_exports

_EXPORTS = {
    "FeatureDistillation": "ikd_edu.distill.feature",
    "attention_map": "ikd_edu.distill.feature",
    "JointsMSELoss": "ikd_edu.distill.ground_truth",
    "joints_mse": "ikd_edu.distill.ground_truth",
    "DECAYS": "ikd_edu.distill.integral",
    "TERMS": "ikd_edu.distill.integral",
    "IntegralKD": "ikd_edu.distill.integral",
    "decay_factor": "ikd_edu.distill.integral",
    "LogitDistillation": "ikd_edu.distill.logit",
    "heatmap_kl": "ikd_edu.distill.logit",
    "AUTO_GRID": "ikd_edu.distill.structure",
    "StructureDistillation": "ikd_edu.distill.structure",
    "affinity_at": "ikd_edu.distill.structure",
    "affinity_loss": "ikd_edu.distill.structure",
    "joint_relations": "ikd_edu.distill.structure",
    "pairwise_affinity": "ikd_edu.distill.structure",
    "pool_features": "ikd_edu.distill.structure",
    "pooled_grid_size": "ikd_edu.distill.structure",
    "relation_loss": "ikd_edu.distill.structure",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
