"""The model factory: :func:`build_model` by name, :data:`MODELS` (name -> builder), :func:`list_models`.

To add a model: a builder ``(num_joints=17, pretrained=None, **knobs) -> PoseModel`` and one
line in :data:`MODELS`; ``build_model`` accepts exactly the builder's keyword arguments as
overrides. The table of names and sizes is in :mod:`ikd_edu.models`.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from ikd_edu.errors import UserError
from ikd_edu.models.simple_baseline import TAP_NAMES, PoseModel, PoseResNet
from ikd_edu.models.students import PoseMobileNetV3, build_mobilenet_student, build_resnet_student


def _simple_baseline(depth: int) -> Callable[..., PoseModel]:
    def build(num_joints: int = 17, deconv_channels=256, pretrained=None) -> PoseModel:
        return PoseResNet(num_joints=num_joints, depth=depth, deconv_channels=deconv_channels, pretrained=pretrained)

    build.__doc__ = f"SimpleBaseline-ResNet-{depth}: torchvision ResNet-{depth} + 3 x 256 deconvs."
    return build


def _quick_builder(widths, blocks, deconv_channels: int, doc: str):
    """A CPU-sized model's builder: custom residual trunk (``widths``, ``blocks`` per stage) + 3 deconvs."""

    def build(num_joints: int = 17, widths=widths, blocks=blocks, deconv_channels=deconv_channels, stem_kernel=7,
              pretrained=None) -> PoseModel:
        return PoseResNet(num_joints, depth=None, widths=widths, blocks=blocks, deconv_channels=deconv_channels,
                          stem_kernel=stem_kernel, pretrained=pretrained)

    build.__doc__ = doc
    return build


build_quick_teacher = _quick_builder(
    (32, 64, 128, 256), (2, 2, 2, 2), 128,
    "CPU-sized teacher: custom residual trunk 32-256 ch, 2 BasicBlocks per stage, 3 x 128 deconvs.")
build_quick_student = _quick_builder(
    (16, 32, 64, 128), (1, 1, 1, 1), 64,
    "CPU-sized student: custom residual trunk 16-128 ch, 1 BasicBlock per stage, 3 x 64 deconvs.")


#: name -> builder(num_joints=..., pretrained=..., **overrides). The order is list_models()'s.
MODELS: dict[str, Callable[..., PoseModel]] = {
    "simplebaseline-r18": _simple_baseline(18),
    "simplebaseline-r34": _simple_baseline(34),
    "simplebaseline-r50": _simple_baseline(50),
    "simplebaseline-r101": _simple_baseline(101),
    "simplebaseline-r152": _simple_baseline(152),
    "teacher-r50": _simple_baseline(50),
    "student": build_resnet_student,
    "student-r18-128": lambda num_joints=17, deconv_channels=128, pretrained=None: build_resnet_student(
        num_joints, deconv_channels=deconv_channels, pretrained=pretrained
    ),
    "student-mobilenetv3": build_mobilenet_student,
    "quick-teacher": build_quick_teacher,
    "quick-student": build_quick_student,
}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model` (``teacher-r50`` is an alias of ``simplebaseline-r50``)."""
    return list(MODELS)


def build_model(name: str, num_joints: int = 17, pretrained: Any = None, **overrides: Any) -> PoseModel:
    """Build a pose model by name.

    Args:
        name: one of :func:`list_models`.
        num_joints: K output heatmaps (17 for COCO, 16 for MPII).
        pretrained: ImageNet trunk weights: None (random init), a path to a torchvision
            state dict, or ``"imagenet"`` (the torchvision file from the torch hub cache;
            nothing is ever downloaded). Pose checkpoints are loaded separately with
            :func:`ikd_edu.models.checkpoints.load_pose_checkpoint`.
        **overrides: architecture knobs of the builder, e.g. ``deconv_channels=128``, or
            ``widths``/``blocks`` for the quick models, ``variant="small"`` for MobileNetV3.

    Returns:
        a :class:`PoseModel` in train mode; ``model.name`` is ``name``.
    """
    key = str(name).strip().lower()
    if key not in MODELS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    builder = MODELS[key]
    allowed = set(inspect.signature(builder).parameters) - {"num_joints", "pretrained"}
    bad = sorted(set(overrides) - allowed)
    if bad:
        raise UserError(f"model {key} has no option(s) {', '.join(bad)}; it accepts: {', '.join(sorted(allowed)) or 'none'}")
    model = builder(num_joints=num_joints, pretrained=pretrained, **overrides)
    model.name = key
    return model
