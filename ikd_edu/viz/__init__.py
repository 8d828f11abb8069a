"""Visualisation: see what the teacher knows and what the student learned.

Every ``plot_*`` function takes plain tensors/arrays (one instance: ``(K, h, w)`` heatmaps,
``(C, H, W)`` features, ``(K, 2|3)`` keypoints) and returns a matplotlib ``Figure`` made
without pyplot; notebooks call them, scripts ``fig.savefig(...)`` them. Widgets live in
:mod:`ikd_edu.viz.widgets`. Every name is imported on first use (``ikd_edu._lazy``), so
``import ikd_edu.viz`` imports neither matplotlib nor ipywidgets.

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
from ikd_edu._lazy import lazy_exports

# name -> defining module; the submodules themselves too (``viz.features.top_channels``)
_EXPORTS = {
    "affinity": "ikd_edu.viz.affinity",
    "affinity_maps": "ikd_edu.viz.affinity",
    "plot_affinity": "ikd_edu.viz.affinity",
    "plot_joint_relations": "ikd_edu.viz.affinity",
    "relation_matrices": "ikd_edu.viz.affinity",
    "curves": "ikd_edu.viz.curves",
    "plot_ablation": "ikd_edu.viz.curves",
    "plot_training_curves": "ikd_edu.viz.curves",
    "read_csv_rows": "ikd_edu.viz.curves",
    "features": "ikd_edu.viz.features",
    "features_pca_rgb": "ikd_edu.viz.features",
    "plot_channel_grid": "ikd_edu.viz.features",
    "plot_features_pca": "ikd_edu.viz.features",
    "heatmaps": "ikd_edu.viz.heatmaps",
    "heatmap_view": "ikd_edu.viz.heatmaps",
    "plot_heatmap_overlay": "ikd_edu.viz.heatmaps",
    "plot_joint_heatmaps": "ikd_edu.viz.heatmaps",
    "plot_teacher_student": "ikd_edu.viz.heatmaps",
    "skeleton": "ikd_edu.viz.skeleton",
    "as_display_image": "ikd_edu.viz.skeleton",
    "draw_pose": "ikd_edu.viz.skeleton",
    "plot_image_with_poses": "ikd_edu.viz.skeleton",
    "pose_gallery": "ikd_edu.viz.skeleton",
    "joint_label": "ikd_edu.viz.skeleton",
    "widgets": "ikd_edu.viz.widgets",
    "HeatmapExplorer": "ikd_edu.viz.widgets",
    "FeatureBrowser": "ikd_edu.viz.widgets",
    "AffinityExplorer": "ikd_edu.viz.widgets",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
