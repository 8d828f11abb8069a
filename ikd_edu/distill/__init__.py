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

from ikd_edu.distill.feature import FeatureDistillation, attention_map
from ikd_edu.distill.ground_truth import JointsMSELoss, joints_mse
from ikd_edu.distill.integral import DECAYS, TERMS, IntegralKD, decay_factor
from ikd_edu.distill.logit import LogitDistillation, heatmap_kl
from ikd_edu.distill.structure import (
    AUTO_GRID,
    StructureDistillation,
    affinity_at,
    affinity_loss,
    joint_relations,
    pairwise_affinity,
    pool_features,
    pooled_grid_size,
    relation_loss,
)

__all__ = [
    "JointsMSELoss", "joints_mse",
    "LogitDistillation", "heatmap_kl",
    "FeatureDistillation", "attention_map",
    "AUTO_GRID", "pooled_grid_size", "pool_features", "pairwise_affinity", "affinity_at", "joint_relations",
    "affinity_loss", "relation_loss", "StructureDistillation",
    "IntegralKD", "decay_factor", "TERMS", "DECAYS",
]
