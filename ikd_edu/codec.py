"""Keypoints <-> heatmaps: the SimpleBaseline codec (reference, unbiased, DARK) and flip-back.

Axes are named once: **N** instances (person crops), **K** joints, **h x w** heatmap
(``heatmap_size = (h, w)``, 64x48 for a 256x192 input). Keypoints are ``(x, y)`` in
*heatmap pixels* with pixel centres at integer coordinates (OpenCV's convention); the crop
-> heatmap stride of the reference is ``feat_stride = input_size / heatmap_size`` (4 for
256x192 -> 64x48), so a crop point ``u`` lands at ``u / 4`` on the heatmap.

Encoding (training targets), for one joint with centre ``(x0, y0)``::

    H[y, x] = exp(-((x - x0)^2 + (y - y0)^2) / (2 sigma^2))     peak 1 at the centre
    drawn only in the window  ul <= (x, y) < br,  0 elsewhere
    tmp_size = 3 sigma
    ul = (int(x0 - tmp_size), int(y0 - tmp_size))               int() truncates to 0
    br = (int(x0 + tmp_size + 1), int(y0 + tmp_size + 1))
    weight = (visible > 0) and not (ul_x >= w or ul_y >= h or br_x < 0 or br_y < 0)

* reference (``unbiased=False``): ``x0 = int(x + 0.5)``, ``y0 = int(y + 0.5)`` (the reference
  rounds the centre to a pixel; ``int`` truncates towards zero, so -0.7 -> 0);
* unbiased (``unbiased=True``, DARK, Zhang et al. CVPR 2020): the Gaussian is centred at the
  exact sub-pixel ``(x, y)``. **Our choice:** the window and the weight are those of the
  reference variant (computed from the rounded centre), so the two variants differ only in
  *where the peak is*, never in which pixels are drawn or which joints count. (mmpose's
  unbiased codec instead draws the Gaussian on the whole map and runs the ul/br test on the
  unrounded centre; the differences are the < 1.2 % tails beyond 3 sigma and joints at the
  very border.)

A joint whose weight is 0 gets an all-zero heatmap. Reference quirk kept on purpose: a joint
just outside the map (e.g. ``x = -7.6`` with sigma 2) can pass the ul/br test with weight 1
although no pixel of its window lies on the map (its heatmap is then all zero).

Decoding (predictions -> coordinates), per map:

* ``"argmax"``: ``idx = argmax(H)``, ``x = idx % w``, ``y = idx // w``, ``maxval = H[y, x]``;
  coordinates of maps with ``maxval <= 0`` are set to 0 (the reference's mask);
* ``"quarter"`` (the SimpleBaseline reference): argmax, then if ``1 < x < w-1`` and
  ``1 < y < h-1`` move a quarter pixel towards the higher neighbour:
  ``x += 0.25 sign(H[y, x+1] - H[y, x-1])``, ``y += 0.25 sign(H[y+1, x] - H[y-1, x])``;
* ``"dark"`` (DARK): blur ``H`` with a Gaussian kernel (rescaled to keep its maximum), take
  ``L = log(max(H_blur, 1e-10))`` and do one Newton step at the argmax ``m``:
  ``m <- m - Hess(L)^-1 grad(L)`` with central finite differences
  (``dx = (L[x+1] - L[x-1]) / 2``, ``dxx = (L[x+2] - 2 L[x] + L[x-2]) / 4``,
  ``dxy = (L[y+1,x+1] - L[y-1,x+1] - L[y+1,x-1] + L[y-1,x-1]) / 4``), applied where
  ``1 < x < w-2`` and ``1 < y < h-2`` and the Hessian determinant is not 0 (as the DARK code).

Flip test (reference): run the network on the image and on its mirror image; the mirrored
output is flipped back (:func:`flip_back`: mirror the columns and swap left/right channels),
shifted one pixel to the right and averaged (:func:`flip_test_average`).

Everything is batched torch (no per-joint Python loops) and runs on any device. Gradients:
the unbiased encoder is differentiable w.r.t. the keypoints (the reference one is not: its
centre is rounded, so its heatmaps are returned without gradient); ``maxvals`` and the DARK coordinates are
differentiable w.r.t. the heatmaps; ``"argmax"``/``"quarter"`` coordinates are piecewise
constant and returned without gradient.
"""
from __future__ import annotations

import numpy as np
import torch

from ikd_edu import codec_fast
from ikd_edu.exercise_guard import reference
from ikd_edu.geometry import heatmap_to_image

DECODE_METHODS = ("quarter", "dark", "argmax")

__all__ = ["DECODE_METHODS", "decode_heatmaps", "decode_to_image", "default_dark_kernel", "encode_heatmaps",
           "flip_back", "flip_test_average"]


# --------------------------------------------------------------------------- helpers
def _as_tensor(x, name: str, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if device is None else x.to(device)
    try:
        return torch.as_tensor(np.asarray(x), device=device)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a tensor or array-like of numbers, got {type(x).__name__}") from exc


def _check_size(heatmap_size, name: str = "heatmap_size") -> tuple[int, int]:
    try:
        h, w = (int(v) for v in heatmap_size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (h, w), two positive ints such as (64, 48); got {heatmap_size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be (h, w), two positive ints such as (64, 48); got {heatmap_size!r}")
    return h, w


def _coord_dtype(device: torch.device) -> torch.dtype:
    """float64 for the (N, K) centre arithmetic, so int(x + 0.5) rounds exactly like Python."""
    return torch.float32 if device.type == "mps" else torch.float64


def _check_heatmaps(heatmaps, name: str = "heatmaps") -> torch.Tensor:
    hm = _as_tensor(heatmaps, name)
    if hm.dim() != 4:
        raise ValueError(
            f"{name} must have shape (N, K, h, w), got {tuple(hm.shape)}; "
            "add a batch axis with heatmaps[None] for a single instance"
        )
    if not hm.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {hm.dtype}")
    return hm


# --------------------------------------------------------------------------- encoding
@reference
def encode_heatmaps(
    keypoints,
    visible,
    heatmap_size: tuple[int, int] = (64, 48),
    sigma: float = 2.0,
    unbiased: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian target heatmaps for keypoints given in heatmap pixels.

    Args:
        keypoints: ``(N, K, 2)`` ``(x, y)`` in heatmap pixels (crop pixels / feat_stride).
            Non-finite values are treated as not labelled.
        visible: ``(N, K)`` visibility (COCO 0/1/2, bool or float); a joint is used if ``> 0``.
        heatmap_size: ``(h, w)``.
        sigma: Gaussian standard deviation in heatmap pixels (2 for 64x48).
        unbiased: centre the Gaussian at the exact sub-pixel point (DARK) instead of the
            rounded one (reference). Window and weights are the same in both variants.
        dtype: dtype of both outputs (float32).
        device: device of the outputs (default: the keypoints' device).

    Returns:
        ``heatmaps (N, K, h, w)``: ``exp(-((x - x0)^2 + (y - y0)^2) / (2 sigma^2))`` inside the
        window ``ul <= (x, y) < br`` (see the module docstring), 0 outside and for weight-0
        joints; ``target_weight (N, K)``: 1 for a visible joint whose window touches the map.

    The 2-D Gaussian is separable, so each map is the outer product of a row profile
    ``(N, K, w)`` and a column profile ``(N, K, h)``: no loop over joints.
    """
    kp = _as_tensor(keypoints, "keypoints", device)
    dev = kp.device
    vis = _as_tensor(visible, "visible", dev)
    if kp.dim() != 3 or kp.shape[-1] != 2:
        hint = " (pass keypoints[..., :2] and visible=keypoints[..., 2])" if kp.dim() == 3 and kp.shape[-1] == 3 else ""
        raise ValueError(f"keypoints must have shape (N, K, 2), got {tuple(kp.shape)}{hint}")
    if vis.shape != kp.shape[:2]:
        raise ValueError(f"visible must have shape (N, K) = {tuple(kp.shape[:2])} to match keypoints, got {tuple(vis.shape)}")
    h, w = _check_size(heatmap_size)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 (2.0 for 64x48 heatmaps), got {sigma}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")

    cdt = _coord_dtype(dev)
    kp = kp.to(cdt)
    finite = torch.isfinite(kp).all(-1)  # (N, K)
    kp = torch.where(finite[..., None], kp, torch.zeros_like(kp))
    tmp_size = sigma * 3

    # Reference centre and window: mu = int(x + 0.5), ul = int(mu - 3s), br = int(mu + 3s + 1)
    mu = torch.trunc(kp + 0.5).detach()  # (N, K, 2)
    ul, br = torch.trunc(mu - tmp_size), torch.trunc(mu + tmp_size + 1)  # (N, K, 2) each
    off_map = (ul[..., 0] >= w) | (ul[..., 1] >= h) | (br[..., 0] < 0) | (br[..., 1] < 0)
    weight = (vis > 0) & finite & ~off_map  # (N, K)

    # the per-pixel work runs in float32 (float64 if asked for); only the (N, K) centre
    # arithmetic above is float64, so that the rounding matches Python's int(x + 0.5)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    center = (kp if unbiased else mu).to(compute)  # (N, K, 2): sub-pixel (DARK) or rounded
    ul, br = ul.to(compute), br.to(compute)
    xs = torch.arange(w, device=dev, dtype=compute)  # (w,)
    ys = torch.arange(h, device=dev, dtype=compute)  # (h,)
    zero = torch.zeros((), device=dev, dtype=compute)
    # 1-D profiles exp(-(t - t0)^2 / (2 s^2)), zero outside the window [ul, br). The exponent
    # is clamped at -80 (exp = 2e-35) only to keep exp() off the slow denormal path far
    # outside the window, where the value is replaced by 0 anyway.
    gx = torch.exp(((xs - center[..., 0:1]) ** 2 * (-0.5 / sigma**2)).clamp_min(-80.0))  # (N, K, w)
    gy = torch.exp(((ys - center[..., 1:2]) ** 2 * (-0.5 / sigma**2)).clamp_min(-80.0))  # (N, K, h)
    gx = torch.where((xs >= ul[..., 0:1]) & (xs < br[..., 0:1]), gx, zero)
    gy = torch.where((ys >= ul[..., 1:2]) & (ys < br[..., 1:2]) & weight[..., None], gy, zero)
    heatmaps = gy[..., :, None] * gx[..., None, :]  # (N, K, h, w) outer products
    return heatmaps.to(dtype), weight.to(dtype)


# --------------------------------------------------------------------------- decoding
def default_dark_kernel(sigma: float = 2.0) -> int:
    """DARK's blur kernel size for a target sigma: ``6 sigma - 1`` made odd (2 -> 11, 3 -> 17)."""
    k = max(3, int(round(6 * sigma - 1)))
    return k if k % 2 == 1 else k + 1


def _gaussian_kernel_1d(size: int, dtype, device) -> torch.Tensor:
    """OpenCV's ``getGaussianKernel(size, 0)``: sigma = 0.3 ((size - 1) / 2 - 1) + 0.8, sum 1."""
    s = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    t = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * s * s))
    return (g / g.sum()).to(dtype)


def _blur_matrix(size: int, g: torch.Tensor) -> torch.Tensor:
    """The ``(size, size)`` banded matrix ``B[i, j] = g[i - j + r]`` (0 where ``|i - j| > r``).

    ``X @ B`` correlates every row of ``X`` with the kernel ``g`` (radius ``r``) under zero
    padding: the band is simply cut off at the border.
    """
    r = (g.numel() - 1) // 2
    i = torch.arange(size, device=g.device)
    d = i[:, None] - i[None, :] + r  # (size, size)
    inside = (d >= 0) & (d < g.numel())
    return torch.where(inside, g[d.clamp(0, g.numel() - 1)], torch.zeros((), dtype=g.dtype, device=g.device))


def _blur(hm: torch.Tensor, kernel: int) -> torch.Tensor:
    """DARK's blur ``(N, K, h, w)``: zero padding, separable Gaussian, rescaled to the old max.

    Separable: ``blur(X) = B_h^T X B_w`` with the banded matrices of :func:`_blur_matrix`
    (two batched matmuls; on CPUs much faster than a 1-channel ``conv2d``).
    """
    h, w = hm.shape[-2:]
    g = _gaussian_kernel_1d(kernel, hm.dtype, hm.device)
    x = _blur_matrix(h, g).T @ (hm @ _blur_matrix(w, g))  # (N, K, h, w)
    old_max = hm.amax(dim=(2, 3), keepdim=True)
    new_max = x.amax(dim=(2, 3), keepdim=True)
    # the reference divides by new_max unconditionally; guard all-zero maps (0/0)
    nonzero = new_max != 0
    return x * torch.where(nonzero, old_max / torch.where(nonzero, new_max, torch.ones_like(new_max)), torch.ones_like(new_max))


def _argmax(hm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer argmax: ``(px, py)`` int64 ``(N, K)`` each and ``maxvals (N, K)``.

    The first maximum on ties, as numpy. On CPUs the index comes from NumPy's SIMD argmax
    (:func:`ikd_edu.codec_fast.argmax_rows`); ``maxvals`` is gathered from ``hm`` either way, so it
    stays differentiable.
    """
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        idx = torch.from_numpy(codec_fast.argmax_rows(flat.detach().numpy().reshape(n * k, h * w)).reshape(n, k))
    else:
        idx = flat.detach().argmax(dim=-1)
    maxvals = flat.gather(-1, idx[..., None])[..., 0]
    return idx % w, torch.div(idx, w, rounding_mode="floor"), maxvals


def _sample(hm: torch.Tensor, px: torch.Tensor, py: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``hm[n, k, py + dy, px + dx]`` for all (n, k), indices clamped into the map ``(N, K)``.

    Clamping is edge padding; callers only use values where the neighbourhood is inside.
    """
    n, k, h, w = hm.shape
    x = (px + dx).clamp(0, w - 1)
    y = (py + dy).clamp(0, h - 1)
    return hm.reshape(n, k, h * w).gather(-1, (y * w + x)[..., None])[..., 0]


def decode_heatmaps(
    heatmaps,
    method: str = "quarter",
    dark_kernel: int | None = None,
    sigma: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps ``(N, K, h, w)`` -> ``coords (N, K, 2)`` in heatmap px, ``maxvals (N, K)``.

    Args:
        heatmaps: ``(N, K, h, w)`` floating point, any device.
        method: ``"quarter"`` (reference: argmax + 0.25 px towards the higher neighbour),
            ``"dark"`` (Newton step on the blurred log-heatmap) or ``"argmax"``.
        dark_kernel: odd blur kernel size for ``"dark"``; default ``default_dark_kernel(sigma)``
            (11 for sigma 2 at 64x48, 17 for sigma 3 at 96x72).
        sigma: the target sigma, only used for the default ``dark_kernel``.

    Returns:
        ``coords (N, K, 2)`` ``(x, y)`` and ``maxvals (N, K)`` (the heatmap value at the
        integer argmax), float32 (float64 if the heatmaps are float64). Coordinates of maps
        whose maximum is ``<= 0`` are ``(0, 0)`` (reference mask); weight them by ``maxvals``.
    """
    if (method == "quarter" and isinstance(heatmaps, torch.Tensor) and heatmaps.is_cpu
            and heatmaps.dtype in (torch.float32, torch.float64) and heatmaps.dim() == 4
            and heatmaps.is_contiguous() and heatmaps.numel()):
        return codec_fast.decode_quarter(heatmaps)  # the common case, before the checks: fewer torch calls
    if method not in DECODE_METHODS:
        raise ValueError(f"method must be one of {DECODE_METHODS}, got {method!r}")
    hm = _check_heatmaps(heatmaps)
    n, k, h, w = hm.shape
    if n * k == 0 or h == 0 or w == 0:
        raise ValueError(f"heatmaps must not be empty, got shape {tuple(hm.shape)}")
    cdt = torch.float64 if hm.dtype == torch.float64 else torch.float32
    hm = hm.to(cdt).contiguous()  # no copy when it already is

    if method == "quarter" and hm.device.type == "cpu":
        return codec_fast.decode_quarter(hm)
    px, py, maxvals = _argmax(hm)  # (N, K) each
    positive = maxvals.detach() > 0  # (N, K): reference mask pred *= (maxval > 0)
    px = torch.where(positive, px, torch.zeros_like(px))
    py = torch.where(positive, py, torch.zeros_like(py))
    coords = torch.stack([px, py], dim=-1).to(cdt)  # (N, K, 2)
    if method == "argmax":
        return coords, maxvals

    if method == "quarter":
        with torch.no_grad():
            inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)  # reference: 1 < px < w-1
            diff_x = _sample(hm, px, py, 1, 0) - _sample(hm, px, py, -1, 0)
            diff_y = _sample(hm, px, py, 0, 1) - _sample(hm, px, py, 0, -1)
            shift = 0.25 * torch.sign(torch.stack([diff_x, diff_y], dim=-1))  # (N, K, 2)
            coords = coords + torch.where(inside[..., None], shift, torch.zeros_like(shift))
        return coords, maxvals

    # "dark"
    kernel = default_dark_kernel(sigma) if dark_kernel is None else int(dark_kernel)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"dark_kernel must be an odd positive int (11 for sigma 2 at 64x48), got {dark_kernel}")
    log_hm = torch.log(_blur(hm, kernel).clamp_min(1e-10))  # (N, K, h, w)

    def at(dx: int, dy: int) -> torch.Tensor:  # log-heatmap at (px + dx, py + dy), (N, K)
        return _sample(log_hm, px, py, dx, dy)

    centre = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))  # first derivatives
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))  # second derivatives, step 2
    dyy = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy**2
    ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2) & (det != 0)  # DARK: 1 < px < w-2
    safe_det = torch.where(ok, det, torch.ones_like(det))
    # offset = -Hess^-1 grad, Hess^-1 = [[dyy, -dxy], [-dxy, dxx]] / det
    off_x = -(dyy * dx - dxy * dy) / safe_det
    off_y = -(dxx * dy - dxy * dx) / safe_det
    offset = torch.stack([off_x, off_y], dim=-1)  # (N, K, 2)
    coords = coords + torch.where(ok[..., None], offset, torch.zeros_like(offset))
    return coords, maxvals


def decode_to_image(
    heatmaps,
    center,
    scale,
    method: str = "quarter",
    dark_kernel: int | None = None,
    sigma: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and map back to image pixels: ``coords_img (N, K, 2)`` float64, ``maxvals (N, K)``.

    ``center``/``scale`` are the crop's ``(N, 2)`` box centre and scale (units of 200 px), as
    returned by :func:`ikd_edu.geometry.box_to_center_scale`; the mapping is
    :func:`ikd_edu.geometry.heatmap_to_image` (the reference ``transform_preds``).
    """
    hm = _check_heatmaps(heatmaps)
    c, s = _as_tensor(center, "center"), _as_tensor(scale, "scale")
    n = hm.shape[0]
    if c.numel() != 2 * n or s.numel() != 2 * n:
        raise ValueError(
            f"center and scale must have shape (N, 2) with N = {n} (one per heatmap instance), "
            f"got {tuple(c.shape)} and {tuple(s.shape)}"
        )
    coords, maxvals = decode_heatmaps(hm, method=method, dark_kernel=dark_kernel, sigma=sigma)
    return heatmap_to_image(coords.detach(), c.reshape(n, 2), s.reshape(n, 2), tuple(hm.shape[-2:])), maxvals


# --------------------------------------------------------------------------- flip test
def _check_flip_index(flip_index, k: int) -> list[int]:
    idx = [int(i) for i in flip_index]
    if sorted(idx) != list(range(k)):
        raise ValueError(
            f"flip_index must be a permutation of 0..{k - 1} (one entry per heatmap channel); "
            f"got {len(idx)} entries. Use ikd_edu.skeleton.COCO.flip_index (17 joints) or MPII.flip_index (16)"
        )
    return idx


def flip_back(heatmaps, flip_index) -> torch.Tensor:
    """Undo a horizontal flip of the input on its heatmaps ``(N, K, h, w)``.

    ``out[:, k, y, x] = heatmaps[:, flip_index[k], y, w - 1 - x]``: mirror the columns and
    swap every (left, right) channel pair (the reference ``flip_back``).
    """
    hm = _check_heatmaps(heatmaps)
    idx = _check_flip_index(flip_index, hm.shape[1])
    return hm.flip(-1)[:, idx]


def flip_test_average(heatmaps, heatmaps_of_flipped_input, flip_index, shift: bool = True) -> torch.Tensor:
    """Flip-test heatmaps ``(N, K, h, w)``: ``(heatmaps + shift(flip_back(flipped))) / 2``.

    With ``shift`` (reference ``SHIFT_HEATMAP``) the flipped-back map moves one pixel to the
    right, ``out[..., 1:] = out[..., :-1]`` (column 0 keeps its value): the mirror of a
    heatmap whose pixel centres sit at integer coordinates is off by one column.
    """
    hm = _check_heatmaps(heatmaps)
    flipped = _check_heatmaps(heatmaps_of_flipped_input, "heatmaps_of_flipped_input")
    if flipped.shape != hm.shape:
        raise ValueError(
            f"heatmaps_of_flipped_input must have the same shape as heatmaps {tuple(hm.shape)}, got {tuple(flipped.shape)}"
        )
    back = flip_back(flipped, flip_index)
    if shift:
        back = torch.cat([back[..., :1], back[..., :-1]], dim=-1)
    return (hm + back) * 0.5
