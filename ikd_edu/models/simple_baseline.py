"""SimpleBaseline (Xiao, Wu & Wei, ECCV 2018): a ResNet trunk + three deconvolutions.

The whole pose network is three pieces, read top to bottom::

    image (N, 3, H, W)
      -> ResNet trunk            conv1/bn1/relu/maxpool, layer1..layer4
                                 -> features (N, C4, H/32, W/32)   (C4 = 2048 for R50)
      -> deconv_layers           3 x [ConvTranspose2d 4x4 stride 2, BN, ReLU]
                                 -> (N, D, H/4, W/4)                (D = 256 by default)
      -> final_layer             1x1 conv to K joints
                                 -> heatmaps (N, K, H/4, W/4)       (64 x 48 for 256 x 192)

Every pose model in ikd-edu (this teacher, the students in ``students.py``, the CPU-sized
``quick-*`` models) derives from :class:`PoseModel`, which adds *feature taps*: named
intermediate tensors that distillation losses and visualisations read::

    stem -> layer1 -> layer2 -> layer3 -> layer4 -> deconv1 -> deconv2 -> deconv3 -> heatmaps

``deconvN`` is the output (after ReLU) of the N-th deconvolution block.

Parameter names follow the official SimpleBaseline code exactly (``conv1``, ``bn1``,
``layer1``..``layer4`` with torchvision's block naming, ``deconv_layers.0`` ..
``deconv_layers.8``, ``final_layer``), so a released ``pose_resnet_50_256x192.pth`` loads
with ``strict=True`` through :func:`ikd_edu.models.checkpoints.load_pose_checkpoint`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from ikd_edu.errors import UserError

#: Feature taps every :class:`PoseModel` offers, in the order the network computes them.
TAP_NAMES: tuple[str, ...] = (
    "stem", "layer1", "layer2", "layer3", "layer4", "deconv1", "deconv2", "deconv3", "heatmaps",
)

BN_MOMENTUM = 0.1  # as in the reference code

# torchvision ResNets: depth -> (block type, blocks per stage). Widths are 64, 128, 256, 512
# (x4 for Bottleneck), so the trunk's last stage gives 512 (R18/34) or 2048 (R50+) channels.
RESNET_SPECS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (tv_resnet.BasicBlock, (2, 2, 2, 2)),
    34: (tv_resnet.BasicBlock, (3, 4, 6, 3)),
    50: (tv_resnet.Bottleneck, (3, 4, 6, 3)),
    101: (tv_resnet.Bottleneck, (3, 4, 23, 3)),
    152: (tv_resnet.Bottleneck, (3, 8, 36, 3)),
}


# --------------------------------------------------------------------------------------
# The shared base class: head + feature taps
# --------------------------------------------------------------------------------------
class PoseModel(nn.Module):
    """Base of all ikd-edu pose models: trunk (subclass) + deconv head + 1x1 heatmap layer.

    A subclass builds its trunk, then calls :meth:`_build_head`, and implements
    :meth:`forward_stem` and :meth:`forward_stage`. It also fills ``self._tap_channels``
    and ``self._tap_strides`` for the trunk taps (``stem``, ``layer1``..``layer4``).

    Interface (the same for every model):

    * ``forward(x (N, 3, H, W)) -> heatmaps (N, K, H/4, W/4)`` - plain, no hooks, so it
      works under ``torch.compile`` and AMP.
    * ``forward_taps(x, names) -> {name: tensor}`` - the requested intermediate tensors;
      computation stops after the last one requested.
    * ``tap_names`` (class attribute), ``tap_channels(name)``, ``tap_stride(name)``.
    * ``num_joints`` (K), ``name`` (set by :func:`ikd_edu.models.build_model`).
    """

    tap_names: tuple[str, ...] = TAP_NAMES
    output_stride: int = 4  # heatmaps are H/4 x W/4

    def __init__(self, num_joints: int) -> None:
        super().__init__()
        if num_joints < 1:
            raise ValueError(f"num_joints must be >= 1, got {num_joints}")
        self.num_joints = num_joints
        self.name = type(self).__name__
        self._tap_channels: dict[str, int] = {}
        self._tap_strides: dict[str, int] = {}

    # ---- the head (identical for every model) ----------------------------------------
    def _build_head(self, in_channels: int, deconv_channels: Sequence[int], trunk_stride: int = 32) -> None:
        """``deconv_layers`` (3 x [ConvTranspose2d 4x4 s2, BN, ReLU]) + ``final_layer`` (1x1).

        Each deconvolution doubles H and W: (N, C, h, w) -> (N, D, 2h, 2w). With
        kernel 4, stride 2, padding 1, output_padding 0: out = (h - 1) * 2 - 2 + 4 = 2h.
        """
        deconv_channels = tuple(int(c) for c in deconv_channels)
        if len(deconv_channels) != 3 or min(deconv_channels) < 1:
            raise ValueError(f"deconv_channels must be 3 positive widths, got {deconv_channels}")
        layers: list[nn.Module] = []
        channels, stride = in_channels, trunk_stride
        for i, width in enumerate(deconv_channels):
            layers += [
                nn.ConvTranspose2d(channels, width, kernel_size=4, stride=2, padding=1, output_padding=0, bias=False),
                nn.BatchNorm2d(width, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ]
            channels, stride = width, stride // 2
            self._tap_channels[f"deconv{i + 1}"] = width
            self._tap_strides[f"deconv{i + 1}"] = stride
        self.deconv_layers = nn.Sequential(*layers)  # indices 0,1 / 3,4 / 6,7 hold parameters
        self.final_layer = nn.Conv2d(channels, self.num_joints, kernel_size=1, stride=1, padding=0)
        self._tap_channels["heatmaps"] = self.num_joints
        self._tap_strides["heatmaps"] = stride
        self.deconv_channels = deconv_channels
        self._init_head()

    def _init_head(self) -> None:
        """Reference init: deconv weights N(0, 0.001), BN weight 1 / bias 0, final N(0, 0.001) bias 0."""
        for m in self.deconv_layers.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.constant_(self.final_layer.bias, 0)

    # ---- subclass hooks ----------------------------------------------------------------
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> stem features (N, C0, H/s, W/s), s = ``tap_stride('stem')``."""
        raise NotImplementedError

    def forward_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run trunk stage ``index`` (1..4): ``layer{index-1}`` features -> ``layer{index}``."""
        raise NotImplementedError

    # ---- forward passes ----------------------------------------------------------------
    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> last trunk features (N, C4, H/32, W/32)."""
        x = self.forward_stem(x)
        x = self.forward_stage(1, x)
        x = self.forward_stage(2, x)
        x = self.forward_stage(3, x)
        return self.forward_stage(4, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> heatmaps (N, K, H/4, W/4)."""
        x = self.forward_trunk(x)  # (N, C4, H/32, W/32)
        x = self.deconv_layers(x)  # (N, D, H/4, W/4)
        return self.final_layer(x)  # (N, K, H/4, W/4)

    def _deconv_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Deconv block ``index`` (1..3): ConvTranspose2d, BN, ReLU. (N, C, h, w) -> (N, D, 2h, 2w)."""
        i = 3 * (index - 1)
        x = self.deconv_layers[i](x)
        x = self.deconv_layers[i + 1](x)
        return self.deconv_layers[i + 2](x)

    def _run_tap_step(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Compute tap ``name`` from the previous tap's tensor."""
        if name == "stem":
            return self.forward_stem(x)
        if name.startswith("layer"):
            return self.forward_stage(int(name[-1]), x)
        if name.startswith("deconv"):
            return self._deconv_block(int(name[-1]), x)
        return self.final_layer(x)  # "heatmaps"

    def check_tap_names(self, names: str | Iterable[str]) -> list[str]:
        """Validate tap names; returns them as a list. Unknown name -> ValueError."""
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError(f"no tap names given; choose from {', '.join(self.tap_names)}")
        bad = [n for n in names if n not in self.tap_names]
        if bad:
            raise ValueError(f"unknown feature tap(s) {', '.join(map(repr, bad))}; valid taps: {', '.join(self.tap_names)}")
        return names

    def forward_taps(self, x: torch.Tensor, names: str | Iterable[str]) -> dict[str, torch.Tensor]:
        """Return the requested intermediate tensors, keyed by tap name (network order).

        Args:
            x: images (N, 3, H, W).
            names: tap names from ``self.tap_names`` (a single string is allowed).

        Returns:
            ``{name: tensor (N, tap_channels(name), H / tap_stride(name), W / tap_stride(name))}``.
            Layers after the last requested tap are not run, so asking for ``"layer4"``
            alone costs only the trunk. ``forward_taps(x, ["heatmaps"])["heatmaps"]``
            equals ``forward(x)``.
        """
        wanted = set(self.check_tap_names(names))
        last = max(self.tap_names.index(n) for n in wanted)
        taps: dict[str, torch.Tensor] = {}
        for name in self.tap_names[: last + 1]:
            x = self._run_tap_step(name, x)
            if name in wanted:
                taps[name] = x
        return taps

    def tap_channels(self, name: str) -> int:
        """Channels C of tap ``name``."""
        self.check_tap_names(name)
        return self._tap_channels[name]

    def tap_stride(self, name: str) -> int:
        """Downsampling of tap ``name`` w.r.t. the input: its size is (H / s, W / s)."""
        self.check_tap_names(name)
        return self._tap_strides[name]

    def trunk_state_keys(self) -> list[str]:
        """State-dict keys of the trunk (everything but ``deconv_layers`` and ``final_layer``)."""
        return [k for k in self.state_dict() if not k.startswith(("deconv_layers.", "final_layer."))]


# --------------------------------------------------------------------------------------
# SimpleBaseline: ResNet trunk (torchvision or a small custom one) + head
# --------------------------------------------------------------------------------------
class PoseResNet(PoseModel):
    """SimpleBaseline pose network with a ResNet trunk.

    Two ways to build the trunk, same module names either way:

    * ``PoseResNet(depth=50)`` - torchvision's ResNet-18/34/50/101/152 (built with
      ``weights=None``; no ``avgpool``/``fc``).
    * ``PoseResNet(depth=None, widths=(32, 64, 128, 256), blocks=(2, 2, 2, 2))`` - a small
      residual trunk of BasicBlocks for CPU experiments (stem conv 7x7/2 + BN + ReLU +
      maxpool, then 4 stages with strides 1, 2, 2, 2).

    Shapes for a 256 x 192 input and ResNet-50 (channels for R18/34 in brackets)::

        stem   (N,   64, 64, 48)   conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2
        layer1 (N,  256, 64, 48)   [64]
        layer2 (N,  512, 32, 24)   [128]
        layer3 (N, 1024, 16, 12)   [256]
        layer4 (N, 2048,  8,  6)   [512]
        deconv1..3 (N, 256, 16, 12) / (N, 256, 32, 24) / (N, 256, 64, 48)
        heatmaps (N, K, 64, 48)

    Args:
        num_joints: K output heatmaps.
        depth: 18, 34, 50, 101 or 152 for a torchvision trunk; None for a custom one.
        widths: custom trunk: channels of stages 1..4 (the stem uses ``widths[0]``).
        blocks: custom trunk: BasicBlocks per stage.
        stem_kernel: custom trunk: kernel of the stem conv (7 as in ResNet; odd).
        deconv_channels: widths of the three deconvolutions (an int means all three).
        pretrained: ImageNet weights for the trunk: None (random init), a path to a
            torchvision-style ResNet state dict, or ``"imagenet"`` (the torchvision file,
            only if it already sits in the torch hub cache; never downloaded).
    """

    def __init__(
        self,
        num_joints: int = 17,
        depth: int | None = 50,
        widths: Sequence[int] | None = None,
        blocks: Sequence[int] | None = None,
        deconv_channels: int | Sequence[int] = 256,
        pretrained: str | os.PathLike | None = None,
        stem_kernel: int = 7,
    ) -> None:
        super().__init__(num_joints)
        if isinstance(deconv_channels, int):
            deconv_channels = (deconv_channels,) * 3
        if depth is not None:
            if depth not in RESNET_SPECS:
                raise UserError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
            block, layers = RESNET_SPECS[depth]
            trunk = getattr(tv_resnet, f"resnet{depth}")(weights=None)
            # Take the modules we need by reference; avgpool and fc are left behind.
            self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
            self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
            stage_widths = [64 * block.expansion, 128 * block.expansion, 256 * block.expansion, 512 * block.expansion]
            stem_channels = 64
            block_counts = layers
            self.arch = f"resnet{depth}"
        else:
            if widths is None or blocks is None or len(widths) != 4 or len(blocks) != 4:
                raise UserError("a custom ResNet trunk needs widths=(c1, c2, c3, c4) and blocks=(b1, b2, b3, b4)")
            stem_channels = int(widths[0])
            self.conv1 = nn.Conv2d(3, stem_channels, kernel_size=stem_kernel, stride=2, padding=stem_kernel // 2, bias=False)
            self.bn1 = nn.BatchNorm2d(stem_channels)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            channels = stem_channels
            stages = []
            for width, n_blocks, stride in zip(widths, blocks, (1, 2, 2, 2)):
                stages.append(_make_basic_stage(channels, int(width), int(n_blocks), stride))
                channels = int(width)
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            stage_widths = [int(w) for w in widths]
            block_counts = tuple(int(b) for b in blocks)
            self.arch = "custom-resnet"
            _init_trunk(self)
        self.depth, self.widths, self.blocks = depth, tuple(stage_widths), tuple(block_counts)
        self._tap_channels.update(stem=stem_channels, **{f"layer{i + 1}": w for i, w in enumerate(stage_widths)})
        self._tap_strides.update(stem=4, layer1=4, layer2=8, layer3=16, layer4=32)
        self._build_head(stage_widths[-1], deconv_channels, trunk_stride=32)
        if pretrained is not None:
            load_trunk_weights(self, pretrained, torchvision_arch=self.arch if depth is not None else None)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C0, H/4, W/4): conv 7x7/2, BN, ReLU, maxpool 3x3/2."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """``layer{index}``: layer1 keeps the size, layers 2..4 halve H and W."""
        if index == 1:
            return self.layer1(x)
        if index == 2:
            return self.layer2(x)
        if index == 3:
            return self.layer3(x)
        return self.layer4(x)


def _make_basic_stage(in_channels: int, width: int, n_blocks: int, stride: int) -> nn.Sequential:
    """A stage of torchvision BasicBlocks (names conv1/bn1/conv2/bn2/downsample.0/.1)."""
    downsample = None
    if stride != 1 or in_channels != width:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(width),
        )
    layers = [tv_resnet.BasicBlock(in_channels, width, stride, downsample)]
    layers += [tv_resnet.BasicBlock(width, width) for _ in range(n_blocks - 1)]
    return nn.Sequential(*layers)


def _init_trunk(model: nn.Module) -> None:
    """torchvision's ResNet init for a custom trunk: Kaiming-normal convs, BN weight 1 / bias 0."""
    for name, m in model.named_modules():
        if name.startswith(("deconv_layers", "final_layer")):
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


# --------------------------------------------------------------------------------------
# ImageNet trunk weights (never downloaded)
# --------------------------------------------------------------------------------------
def torchvision_weight_files(arch: str) -> list[tuple[str, str]]:
    """``[(file name, url), ...]`` of torchvision's ImageNet weights for ``arch`` (V1 first)."""
    from torchvision.models import get_model_weights

    return [(Path(w.url).name, w.url) for w in get_model_weights(arch)]


def find_cached_imagenet_weights(arch: str) -> Path:
    """Path of torchvision's ImageNet file for ``arch`` in the torch hub cache, else UserError."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    files = torchvision_weight_files(arch)
    for file_name, _ in files:
        if (cache / file_name).is_file():
            return cache / file_name
    file_name, url = files[0]
    raise UserError(
        f"ImageNet weights for {arch} are not in the torch hub cache ({cache / file_name}); "
        f"ikd-edu never downloads at run time. Download {url} once and put it there, "
        f"or pass pretrained=/path/to/{file_name}, or use pretrained=None (random init)."
    )


def load_trunk_weights(model: PoseModel, pretrained: str | os.PathLike, torchvision_arch: str | None) -> None:
    """Load ImageNet classifier weights into the trunk of ``model`` (strict on trunk keys).

    ``pretrained`` is a file path or ``"imagenet"`` (needs ``torchvision_arch`` and the file
    in the torch hub cache). The classifier (``fc.*`` / ``classifier.*``) is dropped; every
    trunk key must be present with the right shape, otherwise a UserError lists them.
    """
    from ikd_edu.io import load_torch
    from ikd_edu.models.checkpoints import compare_state_dicts, extract_state_dict, format_mismatch

    if str(pretrained) == "imagenet":
        if torchvision_arch is None:
            raise UserError(
                f"{model.name} has a custom trunk: there are no ImageNet weights for it; use pretrained=None"
            )
        path = find_cached_imagenet_weights(torchvision_arch)
    else:
        path = Path(pretrained)
    state = extract_state_dict(load_torch(path))
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    trunk_keys = set(model.trunk_state_keys())
    full = model.state_dict()
    trunk_state = {k: v for k, v in full.items() if k in trunk_keys}
    missing, unexpected, mismatched = compare_state_dicts(trunk_state, state)
    if missing or unexpected or mismatched:
        raise UserError(f"trunk weights {path} do not fit {model.name}: " + format_mismatch(missing, unexpected, mismatched))
    model.load_state_dict(state, strict=False)
