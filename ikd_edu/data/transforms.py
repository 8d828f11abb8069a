"""Top-down transforms: augmentation sampling, flips, half-body boxes, the affine crop.

The conventions are those of the SimpleBaseline / HRNet reference code (``JointsDataset``):

* a person is described by ``center (2,)`` and ``scale (2,)`` (box size / 200 px, see
  :mod:`ikd_edu.geometry`);
* training samples ``scale *= clip(randn * sf + 1, 1 - sf, 1 + sf)``,
  ``rotation = clip(randn * rf, -2 rf, 2 rf)`` with probability 0.6 (else 0) and a
  horizontal flip with probability 0.5 (:func:`sample_augmentation`);
* a flip mirrors the image (``x -> width - 1 - x``), swaps left/right joints and mirrors the
  centre (:func:`flip_joints`, :func:`flip_center`);
* the crop is ``cv2.warpAffine(image, A, (W, H), flags=INTER_LINEAR, borderValue=0)``:
  output pixel ``(x, y)`` takes the bilinear sample of the image at ``A^-1 [x, y, 1]``,
  pixel centres at integer coordinates, zeros outside the image (:func:`crop_image`).

Here the flip is not applied to the pixels: it is folded into the crop matrix
(``A_total = A(center') @ F`` with ``F: x -> width - 1 - x``), which gives the same crop
as flipping the array first and costs nothing. :func:`top_down_sample` strings the steps
together for one person; the datasets (:mod:`ikd_edu.data.coco`, :mod:`ikd_edu.data.mpii`)
call it and then encode heatmaps with :func:`ikd_edu.codec.encode_heatmaps`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ikd_edu.geometry import PIXEL_STD, get_affine_transform
from ikd_edu.skeleton import Skeleton

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Which labelled joints keep their target weight after the crop (``data.target_weight_rule``):
#:
#: * ``"reference"`` (default): every labelled joint stays visible here; the codec then gives
#:   weight 0 only when the joint's whole 3-sigma window lies off the heatmap
#:   (:func:`ikd_edu.codec.encode_heatmaps`). This is SimpleBaseline's ``JointsDataset``: a
#:   labelled joint just outside the crop keeps weight 1 and a partial Gaussian at the border.
#: * ``"inside-crop"``: additionally zero every joint whose crop position is outside
#:   ``[0, W) x [0, H)``. With flip-only augmentation (the quickstart) the two rules agree;
#:   how often they differ under scale/rotation augmentation: benchmarks/README.md.
TARGET_WEIGHT_RULES = ("reference", "inside-crop")


@dataclass
class AugmentConfig:
    """Training augmentation of the reference code (SimpleBaseline defaults).

    Attributes:
        scale_factor: ``sf``; the box scale is multiplied by ``clip(randn*sf + 1, 1-sf, 1+sf)``.
        rotation_factor: ``rf`` degrees; rotation ``clip(randn*rf, -2rf, 2rf)``.
        rotation_prob: probability of rotating at all (reference: 0.6).
        flip_prob: probability of a horizontal flip (reference: 0.5; 0 disables flipping).
        half_body_prob: probability of the half-body crop (HRNet uses 0.3, SimpleBaseline 0).
        half_body_min_joints: half-body is tried only when more than this many joints are
            labelled (HRNet's ``num_joints_half_body = 8``).
        half_body_scale: enlargement of the half-body box (HRNet: 1.5).
    """

    scale_factor: float = 0.3
    rotation_factor: float = 40.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.0
    half_body_min_joints: int = 8
    half_body_scale: float = 1.5


def sample_augmentation(rng: np.random.Generator, cfg: AugmentConfig) -> tuple[float, float, bool]:
    """Draw one augmentation: ``(scale_mult, rotation_degrees, flip)``.

    ``scale_mult = clip(randn * sf + 1, 1 - sf, 1 + sf)``; ``rotation = clip(randn * rf, -2rf, 2rf)``
    with probability ``rotation_prob`` else 0; ``flip`` with probability ``flip_prob``.
    """
    sf, rf = cfg.scale_factor, cfg.rotation_factor
    scale_mult = float(np.clip(rng.standard_normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
    rotation = float(np.clip(rng.standard_normal() * rf, -2.0 * rf, 2.0 * rf))
    if rng.random() >= cfg.rotation_prob:
        rotation = 0.0
    flip = bool(rng.random() < cfg.flip_prob)
    return scale_mult, rotation, flip


def flip_joints(joints, visible, image_width: float, flip_index) -> tuple[np.ndarray, np.ndarray]:
    """Mirror joints of a horizontally flipped image and swap left/right.

    Args:
        joints: ``(K, 2)`` or ``(K, 3)`` (x, y[, v]) in image pixels (any leading axes: ``(..., K, C)``).
        visible: ``(K,)`` (or ``(..., K)``) visibility / weights.
        image_width: width of the image in pixels; ``x -> image_width - 1 - x``.
        flip_index: permutation from :attr:`ikd_edu.skeleton.Skeleton.flip_index`.

    Returns:
        ``(joints, visible)`` flipped copies, same shapes. Only ``x`` changes value; the other
        columns are permuted with the joints.
    """
    j = np.array(joints, dtype=np.float64, copy=True)
    v = np.asarray(visible)
    j[..., 0] = image_width - 1 - j[..., 0]
    idx = np.asarray(flip_index)
    return j[..., idx, :], v[..., idx].copy()


def flip_center(center, image_width: float) -> np.ndarray:
    """Centre ``(2,)`` (or ``(N, 2)``) of a box in the flipped image: ``x -> image_width - 1 - x``."""
    c = np.array(center, dtype=np.float64, copy=True)
    c[..., 0] = image_width - 1 - c[..., 0]
    return c


def flip_matrix(image_width: float) -> np.ndarray:
    """``(3, 3)`` homogeneous matrix of the horizontal flip ``x -> image_width - 1 - x``."""
    return np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def half_body_transform(
    joints,
    visible,
    skeleton: Skeleton,
    aspect_ratio: float,
    rng: np.random.Generator,
    enlarge: float = 1.5,
    pixel_std: float = PIXEL_STD,
) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """HRNet's half-body box: a centre/scale around the upper or the lower body joints.

    The labelled joints are split into upper body (``skeleton.upper_body_joints``) and the rest.
    The upper half is chosen when ``randn < 0.5`` (sic, the reference draws a normal, so
    p ~= 0.69) and it has more than 2 joints, else the lower half if it has more than 2,
    else the upper half. The box around the chosen joints is padded to ``aspect_ratio``
    (crop W/H) and enlarged by ``enlarge`` (1.5).

    Args:
        joints: ``(K, 2+)`` image pixels. visible: ``(K,)``; joints with ``visible > 0`` count.

    Returns:
        ``center (2,)``, ``scale (2,)`` (units of ``pixel_std``), or ``(None, None)`` if fewer
        than 2 joints were selected.
    """
    j = np.asarray(joints, dtype=np.float64)[:, :2]
    v = np.asarray(visible) > 0
    upper_ids = skeleton.upper_body_joints
    is_upper = np.zeros(len(j), dtype=bool)
    is_upper[list(upper_ids)] = True
    upper, lower = j[v & is_upper], j[v & ~is_upper]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        selected = upper
    else:
        selected = lower if len(lower) > 2 else upper
    if len(selected) < 2:
        return None, None
    center = selected.mean(axis=0)
    w, h = selected.max(axis=0) - selected.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w, h]) / pixel_std * enlarge
    return center, scale


# --------------------------------------------------------------------------- the crop


def _inverse_affine(matrices: torch.Tensor) -> torch.Tensor:
    """Invert ``(B, 2, 3)`` affine matrices (float64)."""
    a = matrices[:, :, :2]
    a_inv = torch.linalg.inv(a)
    return torch.cat([a_inv, -(a_inv @ matrices[:, :, 2:])], dim=2)


def _sampling_theta(inv: torch.Tensor, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """``affine_grid`` theta ``(B, 2, 3)`` for crop->image matrices ``inv`` (pixel units).

    ``grid_sample(align_corners=False)`` puts pixel centre ``i`` of a size-``n`` axis at the
    normalised coordinate ``(2 i + 1) / n - 1``. So: normalised output -> output pixels
    (``D_out^-1``), -> image pixels (``inv``), -> normalised input (``D_in``):
    ``theta = D_in @ inv @ D_out^-1``.
    """
    (h_in, w_in), (h_out, w_out) = in_hw, out_hw
    dev = inv.device

    def to_norm(h, w):  # pixel -> normalised, 3x3
        return torch.tensor(
            [[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]],
            dtype=torch.float64, device=dev,
        )

    inv3 = torch.cat([inv, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64, device=dev).expand(len(inv), 1, 3)], 1)
    theta = to_norm(h_in, w_in) @ inv3 @ torch.linalg.inv(to_norm(h_out, w_out))
    return theta[:, :2, :]


def crop_images_batched(images: torch.Tensor, matrices, output_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear affine crops of a batch, on any device (``affine_grid`` + ``grid_sample``).

    Args:
        images: ``(B, C, H, W)`` float images (same size; pad or crop per image otherwise).
        matrices: ``(B, 2, 3)`` image -> crop matrices (pixel units, integer pixel centres).
        output_size: crop ``(H_out, W_out)``.

    Returns:
        ``(B, C, H_out, W_out)`` in ``images.dtype``: ``out[b, :, y, x]`` is the bilinear sample of
        ``images[b]`` at ``A_b^-1 [x, y, 1]``, with zeros outside the image (cv2.warpAffine,
        ``INTER_LINEAR``, ``borderValue=0``).
    """
    b, c, h, w = images.shape
    m = torch.as_tensor(matrices, dtype=torch.float64, device=images.device).reshape(-1, 2, 3)
    theta = _sampling_theta(_inverse_affine(m), (h, w), tuple(output_size)).to(images.dtype)
    grid = F.affine_grid(theta, [b, c, int(output_size[0]), int(output_size[1])], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _inverse_affine_np(m: np.ndarray) -> np.ndarray:
    """Invert one ``(2, 3)`` affine matrix (closed-form 2x2 inverse; numpy is faster than torch here)."""
    (a, b, tx), (c, d, ty) = m
    det = a * d - b * c
    lin = np.array([[d, -b], [-c, a]]) / det
    return np.concatenate([lin, -(lin @ np.array([[tx], [ty]]))], axis=1)


def crop_image(image, matrix, output_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear affine crop of one image (cv2.warpAffine semantics), values scaled to 0..1.

    Only the part of the image the crop can touch is converted to float, so small people
    in large images are cheap. Same sampling as :func:`crop_images_batched`.

    Args:
        image: ``(H, W, 3)`` uint8 numpy array or tensor, or a ``(3, H, W)`` tensor
            (uint8 -> divided by 255; float is taken as already 0..1).
        matrix: ``(2, 3)`` image -> crop matrix (``ikd_edu.geometry.get_affine_transform``).
        output_size: ``(H_out, W_out)``.

    Returns:
        ``(3, H_out, W_out)`` float32 tensor; pixels that sample outside the image are 0.
    """
    if isinstance(image, np.ndarray):
        chw = torch.from_numpy(image).permute(2, 0, 1)
    elif image.ndim == 3 and image.shape[-1] == 3 and image.shape[0] != 3:
        chw = image.permute(2, 0, 1)
    else:
        chw = image
    _, h, w = chw.shape
    out_h, out_w = int(output_size[0]), int(output_size[1])
    m = np.asarray(matrix.cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64).reshape(2, 3)
    inv = _inverse_affine_np(m)  # (2, 3) crop -> image
    # Source footprint of the crop: the image of its four corners (affine maps hull to hull).
    corners = np.array([[0.0, 0.0, 1.0], [out_w - 1.0, 0.0, 1.0], [0.0, out_h - 1.0, 1.0], [out_w - 1.0, out_h - 1.0, 1.0]])
    src = corners @ inv.T  # (4, 2)
    x0 = max(int(np.floor(src[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(src[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(src[:, 0].max())) + 2, w)
    y1 = min(int(np.ceil(src[:, 1].max())) + 2, h)
    if x1 <= x0 or y1 <= y0:  # the crop lies entirely outside the image
        return torch.zeros(chw.shape[0], out_h, out_w, dtype=torch.float32)
    patch = chw[:, y0:y1, x0:x1]
    patch = patch.float().div_(255.0) if patch.dtype == torch.uint8 else patch.float()
    # Read from the patch (image x = patch x + x0), then the normalised-coordinate theta of
    # _sampling_theta: theta = D_in @ inv_patch @ D_out^-1, written out for one matrix.
    inv_p = inv.copy()
    inv_p[:, 2] -= (x0, y0)
    ph, pw = y1 - y0, x1 - x0
    d_in = np.array([[2.0 / pw, 0.0, 1.0 / pw - 1.0], [0.0, 2.0 / ph, 1.0 / ph - 1.0]])
    d_out_inv = np.array([[out_w / 2.0, 0.0, (out_w - 1) / 2.0], [0.0, out_h / 2.0, (out_h - 1) / 2.0], [0.0, 0.0, 1.0]])
    inv3 = np.vstack([inv_p, [0.0, 0.0, 1.0]])
    theta = torch.from_numpy(d_in @ np.vstack([inv3 @ d_out_inv])).float()[None]  # (1, 2, 3)
    grid = F.affine_grid(theta, [1, patch.shape[0], out_h, out_w], align_corners=False)
    return F.grid_sample(patch[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def normalize(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """ImageNet colour normalisation of ``(3, H, W)`` or ``(B, 3, H, W)`` images in 0..1."""
    m = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - m) / s


#: Channel order of a network's input: ``"rgb"`` (ikd-edu's models) or ``"bgr"`` (the
#: released SimpleBaseline ``pose_resnet_*.pth``: the reference reads images with
#: ``cv2.imread`` and never converts them, so it trained on BGR normalised with the ImageNet
#: mean/std listed in RGB order - channel 0 (blue) minus 0.485, over 0.229).
CHANNEL_ORDERS = ("rgb", "bgr")


def to_network_input(image: torch.Tensor, channel_order: str = "rgb") -> torch.Tensor:
    """RGB ``(3, H, W)`` / ``(B, 3, H, W)`` crop in 0..1 -> the normalised input a model expects.

    ``"rgb"``: :func:`normalize`. ``"bgr"``: reverse the channels first and normalise with the
    same (RGB-ordered) mean/std tuples, exactly what the reference does to a ``cv2.imread`` image.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    if channel_order == "bgr":
        image = image.flip(-3)  # (..., 3, H, W): R G B -> B G R
    return normalize(image)


def denormalize(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Inverse of :func:`normalize` (for display)."""
    m = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return image * s + m


# --------------------------------------------------------------------------- one person


def draw_augmentation(
    center,
    scale,
    joints,
    *,
    image_width: int,
    input_size: tuple[int, int],
    skeleton: Skeleton,
    train: bool = False,
    augment: AugmentConfig | None = None,
    rng: np.random.Generator | None = None,
) -> dict:
    """The random part of one training sample: half-body box, scale, rotation and flip.

    Draws from ``rng`` in the reference order (half-body, then :func:`sample_augmentation`)
    and applies the flip to the joints and the centre (``x -> image_width - 1 - x``). Needs
    only the image *width*, not its pixels, so the device pipeline
    (:mod:`ikd_edu.data.device_pipeline`) draws it in a worker from the JPEG header.

    Args:
        center: ``(2,)`` image pixels; scale: ``(2,)`` box size / 200.
        joints: ``(K, 3)`` (x, y, v) in image pixels; ``v > 0`` means labelled.
        image_width: width of the image, for the flip; input_size: crop ``(H, W)``.
        train: apply ``augment`` (half-body, scale, rotation, flip) drawn from ``rng``.

    Returns:
        dict with ``center (2,)``, ``scale (2,)``, ``rotation`` (degrees), ``flip`` (bool),
        ``xy (K, 2)`` image pixels (flipped if ``flip``), ``visible (K,)`` float64 (labelled).
    """
    joints = np.asarray(joints, dtype=np.float64)
    c = np.array(center, dtype=np.float64).reshape(2)
    s = np.array(scale, dtype=np.float64).reshape(2)
    visible = (joints[:, 2] > 0).astype(np.float64)
    xy = joints[:, :2]
    rotation, flip = 0.0, False
    out_h, out_w = input_size
    if train:
        cfg = augment or AugmentConfig()
        rng = rng if rng is not None else np.random.default_rng()
        if cfg.half_body_prob > 0 and visible.sum() > cfg.half_body_min_joints and rng.random() < cfg.half_body_prob:
            hc, hs = half_body_transform(xy, visible, skeleton, out_w / out_h, rng, enlarge=cfg.half_body_scale)
            if hc is not None:
                c, s = hc, hs
        scale_mult, rotation, flip = sample_augmentation(rng, cfg)
        s = s * scale_mult
    if flip:
        xy, visible = flip_joints(xy, visible, image_width, skeleton.flip_index)
        c = flip_center(c, image_width)
    return {"center": c, "scale": s, "rotation": rotation, "flip": flip, "xy": xy, "visible": visible}


def crop_geometry(center, scale, rotation, flip, xy, visible, image_width, input_size: tuple[int, int],
                  target_weight_rule: str = "reference") -> dict:
    """Crop matrices and crop-pixel joints of N drawn samples (batched :func:`draw_augmentation` outputs).

    Args:
        center, scale: ``(N, 2)``; rotation: ``(N,)`` degrees; flip: ``(N,)`` bool;
        xy: ``(N, K, 2)`` image pixels (already flipped); visible: ``(N, K)``;
        image_width: ``(N,)`` width of each sample's image (for the flip matrix);
        input_size: crop ``(H, W)``;
        target_weight_rule: ``"reference"`` (``visible`` = labelled) or ``"inside-crop"``
            (labelled and inside the crop); see :data:`TARGET_WEIGHT_RULES`.

    Returns:
        dict with ``matrix (N, 2, 3)`` original image -> crop (the flip folded in),
        ``joints_crop (N, K, 2)`` crop pixels and ``visible (N, K)`` float32, all numpy.
    """
    if target_weight_rule not in TARGET_WEIGHT_RULES:
        raise ValueError(f"target_weight_rule must be one of {TARGET_WEIGHT_RULES}, got {target_weight_rule!r}")
    c = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    n = len(c)
    out_h, out_w = input_size
    crop_m = get_affine_transform(c, np.asarray(scale, dtype=np.float64).reshape(n, 2),
                                  np.asarray(rotation, dtype=np.float64).reshape(n), input_size).numpy()  # (N, 2, 3)
    xy = np.asarray(xy, dtype=np.float64)
    joints_crop = xy @ crop_m[:, :, :2].transpose(0, 2, 1) + crop_m[:, None, :, 2]  # (N, K, 2)
    visible = np.asarray(visible, dtype=np.float64)
    if target_weight_rule == "inside-crop":
        inside = (joints_crop[..., 0] >= 0) & (joints_crop[..., 0] < out_w) & (joints_crop[..., 1] >= 0) & \
            (joints_crop[..., 1] < out_h)
        visible = visible * inside
    pre = np.tile(np.eye(3), (n, 1, 1))  # (N, 3, 3): sample the original image at F(x), same as flipping first
    widths = np.broadcast_to(np.asarray(image_width, dtype=np.float64), (n,))
    for i in np.flatnonzero(np.asarray(flip, dtype=bool).reshape(n)):
        pre[i] = flip_matrix(widths[i])
    return {"matrix": crop_m @ pre, "joints_crop": joints_crop, "visible": visible.astype(np.float32)}


def top_down_sample(
    image: np.ndarray,
    center,
    scale,
    joints,
    *,
    input_size: tuple[int, int],
    skeleton: Skeleton,
    train: bool = False,
    augment: AugmentConfig | None = None,
    rng: np.random.Generator | None = None,
    target_weight_rule: str = "reference",
) -> dict:
    """Crop one person (reference ``JointsDataset.__getitem__`` without the heatmaps).

    :func:`draw_augmentation` (the random part), :func:`crop_geometry` (matrix, joints in the
    crop, weights) and :func:`crop_image` (the pixels).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        center: ``(2,)`` image pixels; scale: ``(2,)`` box size / 200.
        joints: ``(K, 3)`` (x, y, v) in image pixels; ``v > 0`` means labelled.
        input_size: crop ``(H, W)``.
        train: apply ``augment`` (half-body, scale, rotation, flip) drawn from ``rng``.
        target_weight_rule: ``"reference"`` (``visible`` = labelled) or ``"inside-crop"``
            (``visible`` = labelled and inside the crop); see :data:`TARGET_WEIGHT_RULES`.

    Returns:
        dict with ``image (3, H, W)`` float32 0..1 (not normalised), ``joints_crop (K, 2)``
        crop pixels, ``visible (K,)`` float32 (1 where labelled; with ``"inside-crop"`` also
        only inside the crop),
        ``center (2,)``, ``scale (2,)``, ``rotation`` (float, degrees), ``flip`` (bool),
        ``matrix (2, 3)`` image -> crop (flip included).
    """
    width = image.shape[1]
    d = draw_augmentation(center, scale, joints, image_width=width, input_size=input_size, skeleton=skeleton,
                          train=train, augment=augment, rng=rng)
    g = crop_geometry(d["center"][None], d["scale"][None], [d["rotation"]], [d["flip"]], d["xy"][None],
                      d["visible"][None], [width], input_size, target_weight_rule)
    matrix = g["matrix"][0]  # (2, 3) original image -> crop
    return {
        "image": crop_image(image, matrix, input_size),
        "joints_crop": g["joints_crop"][0],
        "visible": g["visible"][0],
        "center": d["center"],
        "scale": d["scale"],
        "rotation": d["rotation"],
        "flip": d["flip"],
        "matrix": matrix,
    }
