"""Explain one joint of one person with Captum: Integrated Gradients, Layer Grad-CAM, saliency.

A pose network outputs *dense* heatmaps ``(N, K, h, w)``, but Captum's attribution methods
explain one **scalar per input** (the question Captum users keep asking: "how do I explain a
heatmap?"). :class:`JointScore` is the forward wrapper that makes that scalar for joint ``k``:

* ``target="peak"`` (default): ``S(x) = H_k(x)[y*, x*]``, the heatmap value at the joint's
  *predicted location* ``(x*, y*)`` = argmax of ``H_k`` on the **unperturbed** crop. The
  location is found once and then held fixed, so ``S`` is one smooth function of ``x`` along
  the whole Integrated-Gradients path (re-taking the argmax at every step would make the
  target jump from pixel to pixel).
* ``target="window"``: ``S(x) = sum_{|dy|,|dx| <= r} H_k(x)[y* + dy, x* + dx]``, the sum over
  a ``(2r + 1) x (2r + 1)`` window around the same fixed location (clipped at the border),
  ``r = window``. It explains "why is there mass *around* the joint", which is less noisy
  than a single pixel; ``r = 2`` covers the 3-sigma core of a sigma-2 Gaussian target.

Methods (``method=``):

* ``"integrated_gradients"``: ``IG_i = (x_i - b_i) * mean_{a in (0,1]} dS(b + a (x - b)) / dx_i``
  (Gauss-Legendre with ``n_steps`` points, batched ``internal_batch_size`` at a time so memory
  stays bounded). Completeness: ``sum_i IG_i = S(x) - S(b)`` up to the *convergence delta*
  Captum returns. Baselines ``b`` (in the normalised input space the model sees):
  ``"black"`` = the all-black image (``normalize(0)``), ``"mean"`` = all zeros = the ImageNet
  mean colour, ``"blur"`` = the crop blurred with a Gaussian (sigma ``blur_sigma`` px): it
  keeps colours and removes edges, so it asks "which *structure* made the joint?".
* ``"gradcam"``: Layer Grad-CAM on a feature tap (``layer="deconv2"`` by default, any of
  ``model.tap_names`` except ``"heatmaps"``): ``ReLU(sum_c mean_uv(dS/dA_c) A_c)``, upsampled
  (bilinear) from the tap's ``(H/s, W/s)`` to the crop's ``(H, W)``. The default is the
  stride-8 ``deconv2`` (16 x 12 = 192 positions at 128x96, 32 x 24 at 256x192): ``layer4``
  is only 4 x 3 at 128x96, and upsampling 12 values smears a knee into a corner blob.
* ``"saliency"``: ``|dS/dx|``, the plain gradient magnitude.

The model is never changed: it is put in ``eval()`` mode (BatchNorm statistics frozen), its
parameters get ``requires_grad=False`` while Captum runs (so no ``.grad`` is ever stored on
them), and both are restored afterwards, even on error.

At 128x96 with the ``quick-*`` models all three methods run on a CPU in well under a second
each (IG with 32 steps).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ikd_edu.data.transforms import denormalize, normalize
from ikd_edu.errors import UserError

METHODS = ("integrated_gradients", "gradcam", "saliency")
DEFAULT_GRADCAM_LAYER = "deconv2"  # stride 8: >= 48 positions even at the quick 128x96 crops
COLOR_SCALES = ("shared", "per-panel")
TARGETS = ("peak", "window")
BASELINES = ("black", "blur", "mean")

__all__ = [
    "Attribution",
    "JointScore",
    "METHODS",
    "TARGETS",
    "BASELINES",
    "make_baseline",
    "explain_joint",
    "frozen",
    "plot_teacher_student_attribution",
    "compare_teacher_student",
]


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Eval mode + ``requires_grad=False`` on every parameter; both restored on exit.

    Inside, gradients flow to the *input* (and to intermediate activations) but never to
    parameters, so no ``.grad`` is stored on the model and BatchNorm statistics stay put.
    """
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


class _TapProbe(nn.Module):
    """Runs a :class:`PoseModel` tap by tap and passes tap ``layer`` through ``self.probe``.

    ``nn.Identity`` at the chosen tap gives Captum's layer methods a module to hook on,
    whatever the architecture (ResNet stage, MobileNet block or deconv block).
    """

    def __init__(self, model: nn.Module, layer: str | None) -> None:
        super().__init__()
        self.model = model
        self.layer = layer
        self.probe = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, K, h, w)
        if self.layer is None:
            return self.model(x)
        for name in self.model.tap_names:
            x = self.model._run_tap_step(name, x)
            if name == self.layer:
                x = self.probe(x)
        return x


class JointScore(nn.Module):
    """Forward wrapper: crops ``(B, 3, H, W)`` -> one score per crop ``(B,)`` for joint ``joint``.

    Args:
        model: a pose model (``forward(x) -> heatmaps (B, K, h, w)``).
        joint: joint index k (0..K-1).
        location: ``(x*, y*)`` integer heatmap pixel, fixed (see the module docstring).
        target: ``"peak"`` (heatmap value at the location) or ``"window"`` (sum over the
            ``(2 window + 1)^2`` pixels around it, clipped at the border).
        window: half-size r of the window (heatmap pixels).
        layer: a tap name to expose as ``self.net.probe`` for Layer Grad-CAM, or None.
    """

    def __init__(self, model: nn.Module, joint: int, location: tuple[int, int], target: str = "peak",
                 window: int = 2, layer: str | None = None) -> None:
        super().__init__()
        if target not in TARGETS:
            raise UserError(f"target must be one of {TARGETS}, got {target!r}")
        self.net = _TapProbe(model, layer)
        self.joint = int(joint)
        self.location = (int(location[0]), int(location[1]))
        self.target = target
        self.window = int(window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hm = self.net(x)[:, self.joint]  # (B, h, w)
        px, py = self.location
        if self.target == "peak":
            return hm[:, py, px]  # (B,)
        r = self.window
        h, w = hm.shape[-2:]
        return hm[:, max(0, py - r): min(h, py + r + 1), max(0, px - r): min(w, px + r + 1)].sum(dim=(-2, -1))


def make_baseline(image_crop: torch.Tensor, baseline: str = "black", blur_sigma: float = 6.0) -> torch.Tensor:
    """IG baseline for a normalised crop ``(3, H, W)`` (see the module docstring)."""
    if baseline == "black":
        return normalize(torch.zeros_like(image_crop))  # (3, H, W): -mean / std per channel
    if baseline == "mean":
        return torch.zeros_like(image_crop)  # ImageNet mean colour
    if baseline == "blur":
        radius = max(1, int(round(3 * blur_sigma)))
        t = torch.arange(-radius, radius + 1, dtype=image_crop.dtype, device=image_crop.device)
        g = torch.exp(-(t**2) / (2 * blur_sigma**2))
        g = g / g.sum()
        x = image_crop[None]  # (1, 3, H, W); separable blur, reflect-padded
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
        x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), g.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
        return x[0]
    raise UserError(f"baseline must be one of {BASELINES}, got {baseline!r}")


@dataclass
class Attribution:
    """What :func:`explain_joint` returns.

    Attributes:
        map: ``(H, W)`` float tensor over the crop, the thing to draw: IG summed over the
            colour channels (signed), saliency max over channels (>= 0), Grad-CAM upsampled (>= 0).
        raw: Captum's raw output: ``(3, H, W)`` for IG/saliency, ``(1, H/s, W/s)`` for Grad-CAM.
        method, target, joint: what was explained.
        location_heatmap: ``(x*, y*)`` the fixed target pixel on the heatmap.
        location_crop: ``(x, y)`` the same point in crop pixels (``* stride``).
        score: ``S(x)`` on the crop. baseline_score: ``S(b)`` (IG only).
        delta: IG convergence delta ``sum(IG) - (S(x) - S(b))`` (IG only).
        extras: anything method-specific (layer, baseline, n_steps).
    """

    map: torch.Tensor
    raw: torch.Tensor
    method: str
    target: str
    joint: int
    location_heatmap: tuple[int, int]
    location_crop: tuple[float, float]
    score: float
    baseline_score: float | None = None
    delta: float | None = None
    extras: dict = field(default_factory=dict)


def explain_joint(
    model: nn.Module,
    image_crop: torch.Tensor,
    joint: int,
    method: str = "integrated_gradients",
    target: str = "peak",
    window: int = 2,
    baseline: str = "black",
    layer: str = DEFAULT_GRADCAM_LAYER,
    n_steps: int = 32,
    internal_batch_size: int | None = 16,
    blur_sigma: float = 6.0,
) -> Attribution:
    """Attribute one joint's score to the pixels of one person crop.

    Args:
        model: a pose model; left exactly as it was (see :func:`frozen`).
        image_crop: ``(3, H, W)`` normalised crop (as ``TopDownCocoDataset`` items give it).
        joint: joint index k.
        method: ``"integrated_gradients"``, ``"gradcam"`` or ``"saliency"``.
        target: ``"peak"`` or ``"window"`` (see :class:`JointScore`); window: its half-size r.
        baseline: IG baseline ``"black"``, ``"blur"`` or ``"mean"`` (:func:`make_baseline`).
        layer: Grad-CAM tap (``model.tap_names`` except ``"heatmaps"``; default ``"deconv2"``).
        n_steps: IG integration points; internal_batch_size: IG points per forward/backward.
        blur_sigma: Gaussian sigma (crop px) of the ``"blur"`` baseline.

    Returns:
        an :class:`Attribution` (``map`` is ``(H, W)``).
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    if method not in METHODS:
        raise UserError(f"method must be one of {METHODS}, got {method!r}")
    x = torch.as_tensor(image_crop)
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise UserError(f"image_crop must be one normalised crop of shape (3, H, W), got {tuple(x.shape)}")
    num_joints = getattr(model, "num_joints", None)
    if num_joints is not None and not 0 <= int(joint) < num_joints:
        raise UserError(f"joint must be in 0..{num_joints - 1}, got {joint}")
    if method == "gradcam" and (layer not in getattr(model, "tap_names", ()) or layer == "heatmaps"):
        names = [n for n in getattr(model, "tap_names", ()) if n != "heatmaps"]
        raise UserError(f"Grad-CAM layer {layer!r} is not a feature tap of this model; choose one of {names}")
    param = next(model.parameters(), None)
    x = x.detach().to(device=param.device if param is not None else "cpu", dtype=torch.float32)
    H, W = x.shape[-2:]
    inputs = x[None]  # (1, 3, H, W)

    with frozen(model):
        with torch.no_grad():
            heatmaps = model(inputs)  # (1, K, h, w)
        h, w = heatmaps.shape[-2:]
        flat = int(heatmaps[0, joint].flatten().argmax())
        loc = (flat % w, flat // w)  # (x*, y*) heatmap px, fixed from here on
        stride = (W / w, H / h)
        scorer = JointScore(model, joint, loc, target=target, window=window,
                            layer=layer if method == "gradcam" else None)
        with torch.no_grad():
            score = float(scorer(inputs)[0])
        extras: dict = {}
        baseline_score = delta = None
        if method == "integrated_gradients":
            base = make_baseline(x, baseline, blur_sigma)[None]  # (1, 3, H, W)
            ig = IntegratedGradients(scorer)
            raw, d = ig.attribute(inputs.clone().requires_grad_(True), baselines=base, n_steps=int(n_steps),
                                  internal_batch_size=internal_batch_size, return_convergence_delta=True)
            raw = raw[0].detach()  # (3, H, W)
            with torch.no_grad():
                baseline_score = float(scorer(base)[0])
            delta = float(d.reshape(-1)[0])
            amap = raw.sum(0)  # (H, W) signed
            extras.update(baseline=baseline, n_steps=int(n_steps), internal_batch_size=internal_batch_size)
        elif method == "saliency":
            raw = Saliency(scorer).attribute(inputs.clone().requires_grad_(True), abs=True)[0].detach()  # (3, H, W)
            amap = raw.amax(0)
        else:
            cam = LayerGradCam(scorer, scorer.net.probe).attribute(
                inputs.clone().requires_grad_(True), relu_attributions=True)  # (1, 1, H/s, W/s)
            raw = cam[0].detach()
            amap = LayerAttribution.interpolate(cam.detach(), (H, W), interpolate_mode="bilinear")[0, 0]
            extras.update(layer=layer)
    return Attribution(
        map=amap.detach().cpu().float(), raw=raw.cpu(), method=method, target=target, joint=int(joint),
        location_heatmap=loc, location_crop=(loc[0] * stride[0] + (stride[0] - 1) / 2, loc[1] * stride[1] + (stride[1] - 1) / 2),
        score=score, baseline_score=baseline_score, delta=delta, extras=extras,
    )


def _crop_rgb(image_crop: torch.Tensor) -> np.ndarray:
    """Normalised ``(3, H, W)`` -> displayable ``(H, W, 3)`` in 0..1."""
    return denormalize(torch.as_tensor(image_crop).detach().cpu().float()).clamp(0, 1).permute(1, 2, 0).numpy()


def plot_teacher_student_attribution(
    image_crop: torch.Tensor,
    teacher: Attribution,
    student: Attribution,
    joint_name: str | None = None,
    alpha: float = 0.55,
    color_scale: str = "shared",
):
    """Side-by-side figure ``crop | teacher attribution | student attribution`` over the crop.

    ``color_scale="shared"`` (default): both panels use one range, so they compare directly
    (signed maps (IG) a diverging colour map centred at 0, ``-lim..lim``; non-negative maps
    (Grad-CAM, saliency) ``0..max``), with one colour bar labelled "shared scale". A much
    weaker map then looks empty: ``color_scale="per-panel"`` gives each panel its own range
    and its own colour bar, labelled "teacher scale" / "student scale", and says so in the
    panel titles - read the *patterns*, not the strengths, across panels. The target point
    (the fixed predicted location) is marked with a cross. Returns the Figure.
    """
    from matplotlib.figure import Figure

    if color_scale not in COLOR_SCALES:
        raise UserError(f"color_scale must be one of {COLOR_SCALES}, got {color_scale!r}")
    rgb = _crop_rgb(image_crop)
    maps = [teacher.map.numpy(), student.map.numpy()]
    signed = teacher.method == "integrated_gradients"

    def limits(ms):  # (cmap, vmin, vmax) covering the maps ms
        if signed:
            lim = max(float(np.abs(m).max()) for m in ms) or 1.0
            return "coolwarm", -lim, lim
        return "inferno", 0.0, max(float(m.max()) for m in ms) or 1.0

    shared = color_scale == "shared"
    fig = Figure(figsize=(9, 4.2) if shared else (10.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    name = joint_name or f"joint {teacher.joint}"
    axes[0].imshow(rgb)
    axes[0].set_title(f"crop ({name})")
    image = None
    for ax, att, who, amap in zip(axes[1:], (teacher, student), ("teacher", "student"), maps):
        cmap, vmin, vmax = limits(maps if shared else [amap])
        ax.imshow(rgb)
        image = ax.imshow(amap, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha)
        ax.plot(*att.location_crop, "x", color="lime", ms=10, mew=2)
        extra = f", delta {att.delta:+.2g}" if att.delta is not None else ""
        scale = "" if shared else f"\nown colour scale, max |a| = {max(abs(vmin), abs(vmax)):.2g}"
        ax.set_title(f"{who}: {att.method.replace('_', ' ')}\nS = {att.score:.3g}{extra}{scale}", fontsize=9)
        if not shared:
            fig.colorbar(image, ax=ax, shrink=0.8, label=f"attribution ({who} scale)")
    for ax in axes:
        ax.set_axis_off()
    if shared:
        fig.colorbar(image, ax=list(axes[1:]), shrink=0.8, label="attribution (shared scale)")
    return fig


def compare_teacher_student(teacher_model: nn.Module, student_model: nn.Module, image_crop: torch.Tensor,
                            joint: int, joint_name: str | None = None, color_scale: str = "shared", **kwargs):
    """Explain the same joint for both models and plot them: ``(figure, (teacher_attr, student_attr))``.

    ``color_scale``: ``"shared"`` or ``"per-panel"`` (:func:`plot_teacher_student_attribution`);
    ``kwargs`` go to :func:`explain_joint` (method, target, baseline, layer, n_steps, ...).
    """
    t = explain_joint(teacher_model, image_crop, joint, **kwargs)
    s = explain_joint(student_model, image_crop, joint, **kwargs)
    fig = plot_teacher_student_attribution(image_crop, t, s, joint_name=joint_name, color_scale=color_scale)
    return fig, (t, s)
