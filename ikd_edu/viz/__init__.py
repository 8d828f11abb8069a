"""Visualisation: see what the teacher knows and what the student learned.

Every ``plot_*`` function takes plain tensors/arrays (one instance: ``(K, h, w)`` heatmaps,
``(C, H, W)`` features, ``(K, 2|3)`` keypoints) and returns a matplotlib ``Figure`` made
without pyplot; notebooks call them, scripts ``fig.savefig(...)`` them. Widgets live in
:mod:`ikd_edu.viz.widgets` (imported lazily: ipywidgets is only needed there).

=====================  =================================================================
module                 what it draws
=====================  =================================================================
``viz.skeleton``       :func:`draw_pose`, :func:`plot_image_with_poses`, :func:`pose_gallery`
``viz.heatmaps``       :func:`plot_heatmap_overlay`, :func:`plot_joint_heatmaps`,
                       :func:`plot_teacher_student` (teacher | student | difference)
``viz.features``       :func:`plot_channel_grid`, :func:`features_pca_rgb`, :func:`plot_features_pca`
``viz.affinity``       :func:`plot_affinity` (one row of the pairwise affinity as a map),
                       :func:`plot_joint_relations` (K x K) - values from ``distill.structure``
``viz.curves``         :func:`plot_training_curves` (engine CSV logs), :func:`plot_ablation`
``viz.widgets``        ``HeatmapExplorer``, ``FeatureBrowser``, ``AffinityExplorer``
=====================  =================================================================
"""
from ikd_edu.viz.affinity import affinity_maps, plot_affinity, plot_joint_relations, relation_matrices
from ikd_edu.viz.curves import plot_ablation, plot_training_curves, read_csv_rows
from ikd_edu.viz.features import features_pca_rgb, plot_channel_grid, plot_features_pca
from ikd_edu.viz.heatmaps import heatmap_view, plot_heatmap_overlay, plot_joint_heatmaps, plot_teacher_student
from ikd_edu.viz.skeleton import as_display_image, draw_pose, plot_image_with_poses, pose_gallery

__all__ = [
    "draw_pose", "plot_image_with_poses", "pose_gallery", "as_display_image",
    "heatmap_view", "plot_heatmap_overlay", "plot_joint_heatmaps", "plot_teacher_student",
    "plot_channel_grid", "features_pca_rgb", "plot_features_pca",
    "affinity_maps", "plot_affinity", "relation_matrices", "plot_joint_relations",
    "plot_training_curves", "plot_ablation", "read_csv_rows",
    "HeatmapExplorer", "FeatureBrowser", "AffinityExplorer",
]

_WIDGETS = {"HeatmapExplorer", "FeatureBrowser", "AffinityExplorer"}


def __getattr__(name):  # lazy: `from ikd_edu.viz import HeatmapExplorer` imports ipywidgets only then
    if name in _WIDGETS:
        from ikd_edu.viz import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'ikd_edu.viz' has no attribute {name!r}")
