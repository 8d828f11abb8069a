"""Pose models: the SimpleBaseline teacher, compact students, CPU-sized quick models.

One factory (:mod:`ikd_edu.models.factory`) builds them all by name::

    >>> from ikd_edu.models import build_model, list_models
    >>> teacher = build_model("teacher-r50")            # SimpleBaseline-ResNet-50, K = 17
    >>> student = build_model("student")                # ResNet-18 + 3 x 64 deconvs
    >>> heatmaps = student(images)                      # (N, 3, 256, 192) -> (N, 17, 64, 48)
    >>> taps = teacher.forward_taps(images, ["layer4", "heatmaps"])

Every model is a :class:`PoseModel` (same ``forward``, ``forward_taps``, ``tap_names``,
``tap_channels``, ``tap_stride``). Sizes (true MACs, see :mod:`ikd_edu.profile`):

=========================  ===========================================  ========  =======================
name                       architecture                                 params    GMACs
=========================  ===========================================  ========  =======================
``simplebaseline-r18``     ResNet-18 + 3 x 256 deconvs                  15.38 M   2.90  (256 x 192)
``simplebaseline-r34``     ResNet-34 + 3 x 256                          25.48 M   4.71  (256 x 192)
``simplebaseline-r50``     ResNet-50 + 3 x 256 (alias ``teacher-r50``)  34.00 M   5.43  (256 x 192)
``simplebaseline-r101``    ResNet-101 + 3 x 256                         52.99 M   9.06  (256 x 192)
``simplebaseline-r152``    ResNet-152 + 3 x 256                         68.64 M   12.70 (256 x 192)
``student``                ResNet-18 + 3 x 64                           11.83 M   1.87  (256 x 192)
``student-r18-128``        ResNet-18 + 3 x 128                          12.75 M   2.09  (256 x 192)
``student-mobilenetv3``    MobileNetV3-Large + 3 x 128                   5.47 M   0.56  (256 x 192)
``quick-teacher``          custom 32-256 ch, 2 blocks/stage + 3 x 128    3.85 M   0.189 (128 x 96)
``quick-student``          custom 16-128 ch, 1 block/stage + 3 x 64      0.57 M   0.037 (128 x 96)
=========================  ===========================================  ========  =======================

Checkpoints: :func:`ikd_edu.models.checkpoints.load_pose_checkpoint`.
"""
from __future__ import annotations

from ikd_edu._lazy import lazy_exports

_EXPORTS = {
    "build_model": "ikd_edu.models.factory",
    "list_models": "ikd_edu.models.factory",
    "MODELS": "ikd_edu.models.factory",
    "build_quick_teacher": "ikd_edu.models.factory",
    "build_quick_student": "ikd_edu.models.factory",
    "PoseModel": "ikd_edu.models.simple_baseline",
    "PoseResNet": "ikd_edu.models.simple_baseline",
    "TAP_NAMES": "ikd_edu.models.simple_baseline",
    "PoseMobileNetV3": "ikd_edu.models.students",
    "build_resnet_student": "ikd_edu.models.students",
    "build_mobilenet_student": "ikd_edu.models.students",
    "load_pose_checkpoint": "ikd_edu.models.checkpoints",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
