"""Compact students: the same SimpleBaseline head on cheaper trunks.

The IKD paper's student keeps about **35 %** of the parameters and GFLOPs of
SimpleBaseline-ResNet-50 (34.0 M params, 5.43 GMACs at 256 x 192). Our students
(true multiply-accumulates, see :mod:`ikd_edu.profile`, 256 x 192, K = 17):

=========================  ===========================  =========  ======  ========
name                       trunk + deconvs              params     GMACs   vs R50
=========================  ===========================  =========  ======  ========
``student`` (default)      ResNet-18 + 3 x 64           11.83 M    1.87    35 / 34 %
``student-r18-128``        ResNet-18 + 3 x 128          12.75 M    2.09    38 / 38 %
``student-mobilenetv3``    MobileNetV3-Large + 3 x 128   5.47 M    0.56    16 / 10 %
=========================  ===========================  =========  ======  ========

ResNet students are :class:`~ikd_edu.models.simple_baseline.PoseResNet` with
``depth=18``: their names match the official layout too. The MobileNetV3 student shows
that the head and the feature taps do not care which trunk sits underneath.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small

from ikd_edu.errors import UserError
from ikd_edu.models.simple_baseline import PoseModel, PoseResNet, load_trunk_weights


def build_resnet_student(
    num_joints: int = 17, deconv_channels: int | Sequence[int] = 64, depth: int = 18, pretrained=None
) -> PoseResNet:
    """ResNet-18 trunk (512 channels at H/32) + three ``deconv_channels`` deconvolutions."""
    return PoseResNet(num_joints=num_joints, depth=depth, deconv_channels=deconv_channels, pretrained=pretrained)


class PoseMobileNetV3(PoseModel):
    """torchvision MobileNetV3 ``features`` as trunk + the SimpleBaseline head.

    The trunk is torchvision's ``mobilenet_v3_large(weights=None).features`` (or ``_small``),
    kept under the name ``features`` so torchvision's ImageNet file loads into it. Its
    blocks are grouped into the five trunk taps by output stride (``tap_stride``):

    ==========  ======  ======================  =====================
    tap         stride  large: blocks / ch      small: blocks / ch
    ==========  ======  ======================  =====================
    ``stem``    2       0-1 / 16                0 / 16
    ``layer1``  4       2-3 / 24                1 / 16
    ``layer2``  8       4-6 / 40                2-3 / 24
    ``layer3``  16      7-12 / 112              4-8 / 48
    ``layer4``  32      13-16 / 960             9-12 / 576
    ==========  ======  ======================  =====================

    Note that ``stem`` is at stride 2 here, not 4 as in a ResNet: compare taps by
    ``tap_stride``, not by name, when mixing trunks.

    Args:
        num_joints: K heatmaps.
        variant: ``"large"`` or ``"small"``.
        deconv_channels: widths of the three deconvolutions (an int means all three).
        pretrained: None, a path to a torchvision MobileNetV3 state dict, or ``"imagenet"``
            (torchvision's file from the torch hub cache only; never downloaded).
    """

    def __init__(
        self,
        num_joints: int = 17,
        variant: str = "large",
        deconv_channels: int | Sequence[int] = 128,
        pretrained: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(num_joints)
        builders = {"large": mobilenet_v3_large, "small": mobilenet_v3_small}
        if variant not in builders:
            raise UserError(f"MobileNetV3 variant must be 'large' or 'small', got {variant!r}")
        self.arch = f"mobilenet_v3_{variant}"
        self.features = builders[variant](weights=None).features  # classifier left behind
        if isinstance(deconv_channels, int):
            deconv_channels = (deconv_channels,) * 3

        # Group blocks by cumulative stride: 2 -> stem, 4 -> layer1, ..., 32 -> layer4.
        stride, groups = 1, {2: [], 4: [], 8: [], 16: [], 32: []}
        for index, block in enumerate(self.features):
            stride *= max(m.stride[0] for m in block.modules() if isinstance(m, nn.Conv2d))
            groups[stride].append(index)
        names = ("stem", "layer1", "layer2", "layer3", "layer4")
        # (first, last + 1) block indices of each tap: plain ints, friendly to torch.compile
        self._ranges = tuple((g[0], g[-1] + 1) for g in groups.values())
        for name, (s, (first, end)) in zip(names, zip(groups, self._ranges)):
            self._tap_strides[name] = s
            self._tap_channels[name] = self.features[end - 1].out_channels
        self._build_head(self._tap_channels["layer4"], deconv_channels, trunk_stride=32)
        if pretrained is not None:
            load_trunk_weights(self, pretrained, torchvision_arch=self.arch)

    def _run_blocks(self, first: int, end: int, x: torch.Tensor) -> torch.Tensor:
        for i in range(first, end):
            x = self.features[i](x)
        return x

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 16, H/2, W/2)."""
        return self._run_blocks(*self._ranges[0], x)

    def forward_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Blocks of ``layer{index}``; the stride doubles at each stage."""
        return self._run_blocks(*self._ranges[index], x)


def build_mobilenet_student(
    num_joints: int = 17, variant: str = "large", deconv_channels: int | Sequence[int] = 128, pretrained=None
) -> PoseMobileNetV3:
    """MobileNetV3 (large by default) + three ``deconv_channels`` deconvolutions."""
    return PoseMobileNetV3(num_joints=num_joints, variant=variant, deconv_channels=deconv_channels, pretrained=pretrained)
