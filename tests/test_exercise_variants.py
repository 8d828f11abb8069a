"""Learner variants, table-driven: many right answers pass, each wrong one gets *its own* diagnosis.

The tables hold what learners actually write (issue 16 tried 63 implementations): right answers
in every usual idiom (``F.normalize``, ``F.cosine_similarity``, ``clamp_min(eps)``, ``+ eps``,
``torch.where``, loops that are merely slow, any eps <= 1e-6) and wrong ones, each paired with
the words its diagnosis must contain. Every message is also checked for leaks: no tensor
printout, no expected number, no line of the library's reference code or of the instructor's
solutions.

Also here: the shortcut is closed (a reference function called from the learner's code fails
and says so, even when the learner catches the error), legitimate library use still works,
replacing a check is detected, and a check that runs out of time stops and says so.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ikd_edu import exercises
from ikd_edu.exercise_guard import registered

REPO = Path(__file__).resolve().parents[1]
CHECKS = {"encode": exercises.check_encode, "logit_kd": exercises.check_logit_kd,
          "feature_kd": exercises.check_feature_kd, "affinity": exercises.check_affinity,
          "joint_relations": exercises.check_joint_relations, "integral": exercises.check_integral}


# ------------------------------------------------------------------------------------------------
# leaks: no reference code, no instructor solution, no expected values in any message
# ------------------------------------------------------------------------------------------------
def _code_lines(source: str) -> set[str]:
    lines = set()
    for line in source.splitlines():
        code = line.split("#")[0].strip()
        if len(code) >= 16 and not code.startswith(("def ", '"""', "'''", "return (", "if ", "raise ")):
            lines.add(code)
    return lines


def _reference_code() -> set[str]:
    """The statements of every guarded reference function, and the instructor's solution lines."""
    lines: set[str] = set()
    for fn in registered().values():
        path = Path(sys.modules[fn.__module__].__file__)
        tree = ast.parse(path.read_text())
        wanted = fn.__qualname__.split(".")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == wanted[-1]:
                body = node.body[1:] if isinstance(node.body[0], ast.Expr) else node.body  # no docstring
                for stmt in body:
                    lines |= _code_lines(ast.get_source_segment(path.read_text(), stmt) or "")
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(notebook, as_version=4).cells:
            if "### BEGIN SOLUTION" in cell.source:
                inside = cell.source.split("### BEGIN SOLUTION", 1)[1].split("### END SOLUTION", 1)[0]
                lines |= _code_lines(inside)
    return lines


REFERENCE_CODE = _reference_code()


def _assert_no_leak(message: str) -> None:
    assert "tensor(" not in message and "array(" not in message, f"the message prints values:\n{message}"
    assert not re.search(r"\d\.\d{4,}", message), f"the message holds an expected value:\n{message}"
    leaked = [line for line in REFERENCE_CODE if line in message]
    assert not leaked, f"the message holds reference/solution code {leaked}:\n{message}"


def test_the_leak_detector_can_fail():
    assert len(REFERENCE_CODE) > 20
    line = next(iter(sorted(REFERENCE_CODE)))
    with pytest.raises(AssertionError):
        _assert_no_leak(f"encode: try {line}")
    with pytest.raises(AssertionError):
        _assert_no_leak("encode: expected 0.31250")


# ------------------------------------------------------------------------------------------------
# hand-written building blocks (the library's reference functions are off inside a check)
# ------------------------------------------------------------------------------------------------
def _encode(kp, vis, size, sigma=2.0, swap=False, weight_rule="reference", unbiased=False, peak="one",
            window=True, width=2.0):
    """A parametrised hand-written encoder: the right one by default, one mistake per keyword."""
    h, w = size
    kp = torch.as_tensor(kp, dtype=torch.float64)
    vis = torch.as_tensor(vis)
    if swap:
        kp = kp.flip(-1)
    mu = torch.trunc(kp + 0.5)  # (N, K, 2)
    ul, br = torch.trunc(mu - 3 * sigma), torch.trunc(mu + 3 * sigma + 1)
    off_map = (ul[..., 0] >= w) | (ul[..., 1] >= h) | (br[..., 0] < 0) | (br[..., 1] < 0)
    if weight_rule == "swapped-bounds":
        off_map = (ul[..., 0] >= h) | (ul[..., 1] >= w) | (br[..., 0] < 0) | (br[..., 1] < 0)
    weight = {"reference": (vis > 0) & ~off_map, "swapped-bounds": (vis > 0) & ~off_map,
              "visible-only": vis > 0, "ones": torch.ones_like(vis, dtype=torch.bool),
              "visible-2": (vis == 2) & ~off_map}[weight_rule]
    centre = kp if unbiased else mu
    xs, ys = torch.arange(w, dtype=torch.float64), torch.arange(h, dtype=torch.float64)
    gx = torch.exp(-((xs - centre[..., 0:1]) ** 2) / (width * sigma**2))  # (N, K, w)
    gy = torch.exp(-((ys - centre[..., 1:2]) ** 2) / (width * sigma**2))  # (N, K, h)
    if window:
        gx = gx * ((xs >= ul[..., 0:1]) & (xs < br[..., 0:1]))
        gy = gy * ((ys >= ul[..., 1:2]) & (ys < br[..., 1:2]))
    heatmaps = gy[..., :, None] * gx[..., None, :] * ((vis > 0) & ~off_map)[..., None, None]  # (N, K, h, w)
    if peak == "sum":
        heatmaps = heatmaps / heatmaps.sum((2, 3), keepdim=True).clamp_min(1e-12)
    return heatmaps.float(), weight.float()


def _encode_loop(kp, vis, size, sigma):
    """One joint at a time with Python ints, as the SimpleBaseline code does it."""
    h, w = size
    n, k = vis.shape
    heatmaps, weight = torch.zeros(n, k, h, w), torch.zeros(n, k)
    tmp = sigma * 3
    for i in range(n):
        for j in range(k):
            x, y = float(kp[i, j, 0]), float(kp[i, j, 1])
            mx, my = int(x + 0.5), int(y + 0.5)
            ul, br = (int(mx - tmp), int(my - tmp)), (int(mx + tmp + 1), int(my + tmp + 1))
            if vis[i, j] <= 0 or ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
                continue
            weight[i, j] = 1
            for yy in range(max(0, ul[1]), min(br[1], h)):
                for xx in range(max(0, ul[0]), min(br[0], w)):
                    heatmaps[i, j, yy, xx] = np.exp(-((xx - mx) ** 2 + (yy - my) ** 2) / (2 * sigma**2))
    return heatmaps, weight


def _encode_numpy(kp, vis, size, sigma):
    h, w = size
    kp, vis = np.asarray(kp, dtype=np.float64), np.asarray(vis)
    mu = np.trunc(kp + 0.5)
    ul, br = np.trunc(mu - 3 * sigma), np.trunc(mu + 3 * sigma + 1)
    weight = (vis > 0) & ~((ul[..., 0] >= w) | (ul[..., 1] >= h) | (br[..., 0] < 0) | (br[..., 1] < 0))
    yy, xx = np.mgrid[0:h, 0:w]
    d2 = (xx - mu[..., 0, None, None]) ** 2 + (yy - mu[..., 1, None, None]) ** 2
    inside = ((xx >= ul[..., 0, None, None]) & (xx < br[..., 0, None, None])
              & (yy >= ul[..., 1, None, None]) & (yy < br[..., 1, None, None]))
    heatmaps = np.exp(-d2 / (2 * sigma**2)) * inside * weight[..., None, None]
    return heatmaps.astype(np.float32), weight.astype(np.float32)[..., None]  # (N, K, 1), SimpleBaseline's shape


def _mse(a, b, w=None):
    d = a - b if w is None else (a - b) * w[:, :, None, None]
    return 0.5 * d.pow(2).mean()


def _resize(x, size, **kw):
    kw = kw or {"mode": "bilinear", "align_corners": False}
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, **kw)


def _positions(x, pool="avg"):
    """(N, C, H, W) -> (N, P, C): pooled to at most 16 x 12, positions row-major."""
    h, w = x.shape[-2:]
    grid = (min(h, 16), min(w, 12))
    pooled = {"avg": F.adaptive_avg_pool2d, "max": F.adaptive_max_pool2d}[pool](x, grid)
    return pooled.flatten(2).transpose(1, 2)


def _cos(v, normalise):
    """(N, M, D) -> (N, M, M) cosine similarities, the normalisation written in one of the usual ways."""
    norm = v.norm(dim=-1, keepdim=True)
    if normalise == "clamp-1e-12":
        u = v / norm.clamp_min(1e-12)
    elif normalise == "clamp-1e-8":
        u = v / norm.clamp_min(1e-8)
    elif normalise == "plus-1e-8":
        u = v / (norm + 1e-8)
    elif normalise == "plus-1e-6":
        u = v / (norm + 1e-6)
    elif normalise == "normalize":
        u = F.normalize(v, dim=-1)
    elif normalise == "normalize-1e-6":
        u = F.normalize(v, dim=-1, eps=1e-6)
    elif normalise == "where":
        u = torch.where(norm > 0, v / norm, torch.zeros_like(v))
    elif normalise == "cosine_similarity":
        return F.cosine_similarity(v.unsqueeze(2), v.unsqueeze(1), dim=-1)
    elif normalise == "product-plus-eps":
        return (v @ v.transpose(1, 2)) / (norm * norm.transpose(1, 2) + 1e-8)
    elif normalise == "einsum":
        u = v / norm.clamp_min(1e-12)
        return torch.einsum("npc,nqc->npq", u, u)
    elif normalise == "detached-norm":
        u = v / norm.detach().clamp_min(1e-12)
    elif normalise == "none":
        u = v / norm
    else:  # pragma: no cover
        raise ValueError(normalise)
    return u @ u.transpose(1, 2)


def _cos_loop(v):
    """Row by row: slow, but right."""
    rows = []
    for i in range(v.shape[1]):
        rows.append(F.cosine_similarity(v[:, i : i + 1, :], v, dim=-1, eps=1e-8))  # (N, M)
    return torch.stack(rows, dim=1)


def _relations_loop(heatmaps):
    """Instance by instance and joint by joint, with a Python if for the all-zero maps: slow, but right."""
    out = []
    for maps in heatmaps.flatten(2):  # (K, h*w)
        rows = []
        for vector in maps:
            norm = vector.norm()
            unit = vector / norm if float(norm) > 0 else vector * 0
            rows.append(unit)
        units = torch.stack(rows)
        out.append(units @ units.T)
    return torch.stack(out)


def _with_library(module_path, name):
    """A learner function that just calls the library's reference implementation (the shortcut)."""
    import importlib

    return getattr(importlib.import_module(module_path), name)


def _caught_shortcut(x):
    from ikd_edu.distill.structure import pairwise_affinity

    try:
        return pairwise_affinity(x)
    except Exception:  # the learner hides the error and falls back to something wrong
        return _positions(x).sum(-1, keepdim=True).expand(-1, -1, _positions(x).shape[1])


def _library_logit(s, t, g, w, a):
    from ikd_edu.distill import JointsMSELoss

    loss = JointsMSELoss()
    return (1 - a) * loss(s, g, w) + a * loss(s, t.detach(), torch.ones_like(w))


def _library_feature(s, t, adapter):
    from ikd_edu.distill import FeatureDistillation

    module = FeatureDistillation(s.shape[1], t.shape[1])
    module.adapter = adapter
    return module(s, t)


def _relations_via_affinity(h):
    from ikd_edu.distill.structure import pairwise_affinity

    n, k = h.shape[:2]
    return pairwise_affinity(h.flatten(2).transpose(1, 2).reshape(n, -1, k, 1), pool=None)


def _uses_library_metadata(x):
    """Legitimate library use inside a solution: grid sizes and constants, not the reference function."""
    from ikd_edu.distill.structure import AUTO_GRID, pooled_grid_size
    from ikd_edu.skeleton import COCO

    assert len(COCO.joints) == 17 and AUTO_GRID == (16, 12)
    v = F.adaptive_avg_pool2d(x, pooled_grid_size(x.shape[-2:])).flatten(2).transpose(1, 2)
    return _cos(v, "clamp-1e-12")


def _decay(progress, decay, variant="right"):
    """d(progress) as learners write it (``variant`` picks a mistake)."""
    import math

    p = progress
    if decay == "none":
        return 1.0
    if decay == "linear":
        return {"right": 1 - p, "backwards": p, "cosine": 0.5 * (1 + math.cos(math.pi * p))}.get(variant, 1 - p)
    return {"right": 0.5 * (1 + math.cos(math.pi * p)), "no-half": 1 + math.cos(math.pi * p),
            "no-pi": 0.5 * (1 + math.cos(p)), "cos-only": math.cos(math.pi * p),
            "backwards": 0.5 * (1 - math.cos(math.pi * p))}.get(variant, 0.5 * (1 + math.cos(math.pi * p)))


def _integral(parts, a, b, g, dl, p, decay, variant="right", gt=None, feature_decay=True, swap_gd=False,
              skip=None, decay_twice=False):
    d = 1.0 if variant == "no-decay" else _decay(p, decay, variant)
    if decay_twice:
        d = d * d
    g_w, d_w = (dl, g) if swap_gd else (g, dl)
    gt_weight = {"right": 1 - a * d, "one": 1.0, "undecayed": 1 - a, "decayed": d * (1 - a),
                 "inverted": a * d}[gt or "right"]
    logit_weight = 1 - a * d if gt == "inverted" else a * d
    total = gt_weight * parts["gt"] + logit_weight * parts["logit"]
    total = total + b * (d if feature_decay else 1.0) * parts["feature"]
    total = total + g_w * d * parts["affinity"]
    if skip != "relation":
        total = total + d_w * d * parts["relation"]
    return total


def _integral_stack(parts, a, b, g, dl, p, decay):
    import math

    d = {"none": 1.0, "linear": 1.0 - p, "cosine": (1.0 + math.cos(math.pi * p)) / 2}[decay]
    weights = torch.tensor([1 - a * d, a * d, b * d, g * d, dl * d], dtype=torch.float64)
    values = torch.stack([parts[k] for k in ("gt", "logit", "feature", "affinity", "relation")]).double()
    return (weights * values).sum()


def _integral_loop(parts, a, b, g, dl, p, decay):
    d = 1.0
    if decay == "linear":
        d = 1.0 - p
    elif decay == "cosine":
        d = float((1 + torch.cos(torch.tensor(torch.pi * p))) / 2)
    total = parts["gt"]
    for key, weight in (("logit", a), ("feature", b), ("affinity", g), ("relation", dl)):
        total = total + weight * d * parts[key]
    return total - a * d * parts["gt"]


def _integral_tensor_progress(parts, a, b, g, dl, p, decay):
    t = torch.as_tensor(p, dtype=torch.float64)
    d = {"none": torch.ones((), dtype=torch.float64), "linear": 1 - t,
         "cosine": 0.5 * (1 + torch.cos(torch.pi * t))}[decay]
    return torch.lerp(parts["gt"], parts["logit"], a * d) + d * (b * parts["feature"] + g * parts["affinity"]
                                                                   + dl * parts["relation"])


def _integral_library_decay(parts, a, b, g, dl, p, decay):
    from ikd_edu.distill.integral import decay_factor

    d = decay_factor(p, decay)
    return (1 - a * d) * parts["gt"] + a * d * parts["logit"] + d * (b * parts["feature"] + g * parts["affinity"]
                                                                     + dl * parts["relation"])


# ------------------------------------------------------------------------------------------------
# the tables
# ------------------------------------------------------------------------------------------------
RIGHT = {
    # encode
    "encode/vectorised": ("encode", lambda kp, vis, size, sigma: _encode(kp, vis, size, sigma)),
    "encode/loop-over-joints": ("encode", _encode_loop),
    "encode/numpy-and-(N,K,1)-weights": ("encode", _encode_numpy),
    "encode/weight-as-bool-cast-late": ("encode", lambda kp, vis, size, sigma: tuple(
        t.double() for t in _encode(kp, vis, size, sigma))),
    "encode/sigma-keyword-default": ("encode", lambda kp, vis, size, sigma=2.0: _encode(kp, vis, size, sigma=sigma)),
    # logit_kd
    "logit/formula": ("logit_kd", lambda s, t, g, w, a: (1 - a) * _mse(s, g, w) + a * _mse(s, t.detach())),
    "logit/mse_loss": ("logit_kd", lambda s, t, g, w, a: (1 - a) * 0.5 * F.mse_loss(s * w[..., None, None],
                                                                                    g * w[..., None, None])
                       + a * 0.5 * F.mse_loss(s, t.detach())),
    "logit/lerp": ("logit_kd", lambda s, t, g, w, a: _mse(s, g, w) + a * (_mse(s, t.detach()) - _mse(s, g, w))),
    "logit/unsqueeze-twice": ("logit_kd", lambda s, t, g, w, a: (1 - a) * 0.5 * ((s - g) * w.unsqueeze(-1).unsqueeze(-1))
                              .pow(2).sum() / s.numel() + a * 0.5 * ((s - t.detach()) ** 2).sum() / s.numel()),
    "logit/teacher-under-no-grad": ("logit_kd", lambda s, t, g, w, a: (lambda tt: (1 - a) * _mse(s, g, w)
                                    + a * _mse(s, tt))(torch.no_grad()(lambda: t.clone())())),
    # feature_kd
    "feature/adapter-then-resize": ("feature_kd", lambda s, t, ad: (_resize(ad(s), t.shape[-2:]) - t.detach())
                                    .pow(2).mean()),
    "feature/mse_loss": ("feature_kd", lambda s, t, ad: F.mse_loss(_resize(ad(s), t.shape[-2:]), t.detach())),
    "feature/resize-then-adapter": ("feature_kd", lambda s, t, ad: F.mse_loss(ad(_resize(s, t.shape[-2:])),
                                                                               t.detach())),
    "feature/always-interpolate": ("feature_kd", lambda s, t, ad: (F.interpolate(
        ad(s), size=tuple(t.shape[2:]), mode="bilinear", align_corners=False) - t.detach()).pow(2).mean()),
    "feature/sum-over-numel": ("feature_kd", lambda s, t, ad: (lambda d: (d * d).sum() / d.numel())(
        _resize(ad(s), t.shape[-2:]) - t.detach())),
    # affinity (the idioms of issue 16: each used to fail with "use differentiable torch operations")
    "affinity/clamp_min-1e-12": ("affinity", lambda x: _cos(_positions(x), "clamp-1e-12")),
    "affinity/clamp_min-1e-8": ("affinity", lambda x: _cos(_positions(x), "clamp-1e-8")),
    "affinity/plus-1e-8": ("affinity", lambda x: _cos(_positions(x), "plus-1e-8")),
    "affinity/plus-1e-6": ("affinity", lambda x: _cos(_positions(x), "plus-1e-6")),
    "affinity/F.normalize": ("affinity", lambda x: _cos(_positions(x), "normalize")),
    "affinity/F.normalize-eps-1e-6": ("affinity", lambda x: _cos(_positions(x), "normalize-1e-6")),
    "affinity/torch.where": ("affinity", lambda x: _cos(_positions(x), "where")),
    "affinity/F.cosine_similarity": ("affinity", lambda x: _cos(_positions(x), "cosine_similarity")),
    "affinity/product-of-norms-plus-eps": ("affinity", lambda x: _cos(_positions(x), "product-plus-eps")),
    "affinity/einsum": ("affinity", lambda x: _cos(_positions(x), "einsum")),
    "affinity/row-loop": ("affinity", lambda x: _cos_loop(_positions(x))),
    "affinity/library-metadata": ("affinity", _uses_library_metadata),
    # joint relations
    "relations/clamp_min-1e-12": ("joint_relations", lambda h: _cos(h.flatten(2), "clamp-1e-12")),
    "relations/clamp_min-1e-8": ("joint_relations", lambda h: _cos(h.flatten(2), "clamp-1e-8")),
    "relations/plus-1e-8": ("joint_relations", lambda h: _cos(h.flatten(2), "plus-1e-8")),
    "relations/F.normalize": ("joint_relations", lambda h: _cos(h.flatten(2), "normalize")),
    "relations/F.normalize-eps-1e-6": ("joint_relations", lambda h: _cos(h.flatten(2), "normalize-1e-6")),
    "relations/torch.where": ("joint_relations", lambda h: _cos(h.flatten(2), "where")),
    "relations/F.cosine_similarity": ("joint_relations", lambda h: _cos(h.flatten(2), "cosine_similarity")),
    "relations/bmm": ("joint_relations", lambda h: (lambda u: torch.bmm(u, u.transpose(1, 2)))(
        F.normalize(h.reshape(h.shape[0], h.shape[1], -1), dim=2))),
    "relations/joint-loop": ("joint_relations", _relations_loop),
    # integral: the weighted sum and its decay
    "integral/formula": ("integral", _integral),
    "integral/weights-stacked": ("integral", _integral_stack),
    "integral/loop-over-terms": ("integral", _integral_loop),
    "integral/tensor-progress-and-lerp": ("integral", _integral_tensor_progress),
    "integral/dict-of-weights": ("integral", lambda parts, a, b, g, dl, p, decay: (lambda d: sum(
        w * parts[k] for k, w in {"gt": 1 - a * d, "logit": a * d, "feature": b * d, "affinity": g * d,
                                  "relation": dl * d}.items()))(_decay(p, decay))),
    "integral/float32-parts": ("integral", lambda parts, a, b, g, dl, p, decay: _integral(
        {k: v.float() for k, v in parts.items()}, a, b, g, dl, p, decay)),
}

WRONG = {
    # encode: the x/y swap is named on its own, whatever the weights
    "encode/xy-swap-weights-right": ("encode", lambda kp, vis, size, sigma: (
        _encode(kp, vis, size, sigma, swap=True)[0], _encode(kp, vis, size, sigma)[1]), ["x and y are swapped"]),
    "encode/xy-swap-everywhere": ("encode", lambda kp, vis, size, sigma: _encode(kp, vis, size, sigma, swap=True),
                                  ["x and y are swapped"]),
    "encode/xy-swap-visible-only-weights": ("encode", lambda kp, vis, size, sigma: _encode(
        kp, vis, size, sigma, swap=True, weight_rule="visible-only"), ["x and y are swapped"]),
    "encode/off-map-test-swapped": ("encode", lambda kp, vis, size, sigma: _encode(
        kp, vis, size, sigma, weight_rule="swapped-bounds"), ["off-map test", "swaps x and y"]),
    "encode/weights-all-ones": ("encode", lambda kp, vis, size, sigma: _encode(kp, vis, size, sigma, weight_rule="ones"),
                                ["visible == 0", "target_weight 0"]),
    "encode/occluded-dropped": ("encode", lambda kp, vis, size, sigma: _encode(
        kp, vis, size, sigma, weight_rule="visible-2"), ["visible == 1"]),
    "encode/off-map-kept": ("encode", lambda kp, vis, size, sigma: _encode(
        kp, vis, size, sigma, weight_rule="visible-only"), ["off the map"]),
    "encode/normalised": ("encode", lambda kp, vis, size, sigma: _encode(kp, vis, size, sigma, peak="sum"),
                          ["sum 1", "peak"]),
    "encode/sub-pixel-centre": ("encode", lambda kp, vis, size, sigma: _encode(kp, vis, size, sigma, unbiased=True),
                                ["rounds the centre"]),
    "encode/no-window": ("encode", lambda kp, vis, size, sigma: _encode(kp, vis, size, sigma, window=False),
                         ["outside the window"]),
    "encode/sigma-squared": ("encode", lambda kp, vis, size, sigma: _encode(kp, vis, size, sigma, width=1.0),
                             ["2 sigma^2"]),
    "encode/h-w-transposed": ("encode", lambda kp, vis, size, sigma: (
        _encode(kp, vis, size, sigma)[0].transpose(2, 3), _encode(kp, vis, size, sigma)[1]), ["h and w are swapped"]),
    # logit_kd
    "logit/no-target-weight": ("logit_kd", lambda s, t, g, w, a: (1 - a) * _mse(s, g) + a * _mse(s, t.detach()),
                               ["target weight is ignored"]),
    "logit/weighted-teacher": ("logit_kd", lambda s, t, g, w, a: (1 - a) * _mse(s, g, w) + a * _mse(s, t.detach(), w),
                               ["teacher term is weighted"]),
    "logit/alpha-inverted": ("logit_kd", lambda s, t, g, w, a: a * _mse(s, g, w) + (1 - a) * _mse(s, t.detach()),
                             ["alpha mixing is inverted"]),
    "logit/teacher-gradient": ("logit_kd", lambda s, t, g, w, a: (1 - a) * _mse(s, g, w) + a * _mse(s, t),
                               ["gradient reaches the teacher", "detach"]),
    "logit/no-half": ("logit_kd", lambda s, t, g, w, a: 2 * ((1 - a) * _mse(s, g, w) + a * _mse(s, t.detach())),
                      ["factor 0.5"]),
    "logit/library-JointsMSELoss": ("logit_kd", _library_logit, ["a reference function was called", "JointsMSELoss"]),
    # feature_kd
    "feature/no-adapter": ("feature_kd", lambda s, t, ad: (_resize(s, t.shape[-2:]) - t.detach()).pow(2).mean(),
                           ["feature_kd raised RuntimeError", "map the student through the adapter"]),
    "feature/nearest": ("feature_kd", lambda s, t, ad: (_resize(ad(s), t.shape[-2:], mode="nearest") - t.detach())
                        .pow(2).mean(), ["nearest"]),
    "feature/align-corners": ("feature_kd", lambda s, t, ad: (_resize(ad(s), t.shape[-2:], mode="bilinear",
                                                                      align_corners=True) - t.detach()).pow(2).mean(),
                              ["align_corners=True"]),
    "feature/L1": ("feature_kd", lambda s, t, ad: (_resize(ad(s), t.shape[-2:]) - t.detach()).abs().mean(), ["L1"]),
    "feature/teacher-gradient": ("feature_kd", lambda s, t, ad: (_resize(ad(s), t.shape[-2:]) - t).pow(2).mean(),
                                 ["gradient reaches the teacher"]),
    "feature/adapter-detached": ("feature_kd", lambda s, t, ad: (_resize(ad(s).detach(), t.shape[-2:]) - t.detach())
                                 .pow(2).mean(), ["no gradient would reach"]),
    "feature/library-FeatureDistillation": ("feature_kd", _library_feature,
                                            ["a reference function was called", "FeatureDistillation.forward"]),
    # affinity
    "affinity/unnormalised": ("affinity", lambda x: (lambda v: v @ v.transpose(1, 2))(_positions(x)),
                              ["not scale-invariant"]),
    "affinity/no-eps": ("affinity", lambda x: _cos(_positions(x), "none"), ["NaN", "eps"]),
    "affinity/column-major": ("affinity", lambda x: _cos(_positions(x.transpose(-1, -2)), "normalize"),
                              ["row-major"]),
    "affinity/max-pool": ("affinity", lambda x: _cos(_positions(x, "max"), "normalize"), ["max-pooling"]),
    "affinity/no-pool": ("affinity", lambda x: _cos(x.flatten(2).transpose(1, 2), "normalize"),
                         ["average-pool", "16 x 12"]),
    "affinity/detached-norm": ("affinity", lambda x: _cos(_positions(x), "detached-norm"),
                               ["gradient with respect to the features"]),
    "affinity/library-pairwise_affinity": ("affinity", _with_library("ikd_edu.distill.structure", "pairwise_affinity"),
                                           ["a reference function was called", "pairwise_affinity"]),
    "affinity/library-caught": ("affinity", _caught_shortcut, ["a reference function was called"]),
    "affinity/library-affinity_at": ("affinity", lambda x: torch.stack([
        _with_library("ikd_edu.distill.structure", "affinity_at")(x, (0, 0))]), ["a reference function was called"]),
    # joint relations
    "relations/correlation": ("joint_relations", lambda h: _cos(h.flatten(2) - h.flatten(2).mean(-1, keepdim=True),
                                                                "normalize"), ["correlation"]),
    "relations/pixels": ("joint_relations", lambda h: _cos(h.flatten(2).transpose(1, 2), "normalize"),
                         ["(N, h*w, h*w)"]),
    "relations/no-batch-axis": ("joint_relations", lambda h: _cos(h.flatten(2), "normalize")[0], ["batch axis"]),
    "relations/numpy": ("joint_relations", lambda h: torch.from_numpy(_cos(h.flatten(2), "normalize").detach().numpy()),
                        ["keep it in torch"]),
    "relations/library-joint_relations": ("joint_relations", _with_library("ikd_edu.distill.structure",
                                                                           "joint_relations"),
                                          ["a reference function was called", "joint_relations"]),
    "relations/library-via-affinity": ("joint_relations", _relations_via_affinity,
                                       ["a reference function was called"]),
    # integral
    "integral/alpha-inverted": ("integral", lambda *args: _integral(*args, gt="inverted"), ["alpha mix is inverted"]),
    "integral/gt-weight-one": ("integral", lambda *args: _integral(*args, gt="one"), ["ground-truth weight is 1"]),
    "integral/gt-not-decayed": ("integral", lambda *args: _integral(*args, gt="undecayed"),
                                ["ground-truth weight is not decayed"]),
    "integral/gt-decayed-too": ("integral", lambda *args: _integral(*args, gt="decayed"),
                                ["applied to the ground-truth term too"]),
    "integral/no-decay": ("integral", lambda *args: _integral(*args, variant="no-decay"), ["decay is not applied"]),
    "integral/linear-backwards": ("integral", lambda *args: _integral(*args, variant="backwards"),
                                  ["linear decay runs backwards"]),
    "integral/cosine-no-half": ("integral", lambda *args: _integral(*args, variant="no-half"), ["lacks its 1/2"]),
    "integral/cosine-no-pi": ("integral", lambda *args: _integral(*args, variant="no-pi"), ["misses pi"]),
    "integral/cosine-alone": ("integral", lambda *args: _integral(*args, variant="cos-only"), ["turns negative"]),
    "integral/decay-twice": ("integral", lambda *args: _integral(*args, decay_twice=True), ["applied twice"]),
    "integral/gamma-delta-swapped": ("integral", lambda *args: _integral(*args, swap_gd=True),
                                     ["gamma and delta are swapped"]),
    "integral/relation-missing": ("integral", lambda *args: _integral(*args, skip="relation"),
                                  ["joint-relation term is missing"]),
    "integral/feature-not-decayed": ("integral", lambda *args: _integral(*args, feature_decay=False),
                                     ["feature weight beta is not decayed"]),
    "integral/python-number": ("integral", lambda *args: float(_integral(*args)), ["returned a Python number"]),
    "integral/detached": ("integral", lambda parts, *rest: _integral({k: v.detach() for k, v in parts.items()}, *rest),
                          ["does not depend on the parts"]),
    "integral/constant-added": ("integral", lambda *args: _integral(*args) + 1.0, ["value is not the weighted sum"]),
    "integral/wrong-key": ("integral", lambda parts, *rest: parts["kd"], ["KeyError", "the keys"]),
    "integral/library-decay_factor": ("integral", _integral_library_decay,
                                      ["a reference function was called", "decay_factor"]),
}


def test_the_tables_are_big_enough():
    assert len(RIGHT) >= 25 and len(WRONG) >= 25
    for table in (RIGHT, WRONG):
        assert {entry[0] for entry in table.values()} == set(CHECKS), "every check has variants"
    assert len({tuple(patterns) for _, _, patterns in WRONG.values()}) >= 25, "25 different diagnoses at least"


@pytest.mark.parametrize("variant", sorted(RIGHT))
def test_right_answers_pass(variant, capsys):
    check, fn = RIGHT[variant]
    CHECKS[check](fn, budget_s=300)  # judged on correctness here; the budget has its own tests below
    out = capsys.readouterr().out
    assert out.startswith(f"✓ {check} matches ikd_edu."), out
    _assert_no_leak(out)


@pytest.mark.parametrize("variant", sorted(WRONG))
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_wrong_answers_get_their_own_diagnosis(variant, capsys):
    check, fn, patterns = WRONG[variant]
    with pytest.raises(AssertionError) as info:
        CHECKS[check](fn)
    message = str(info.value)
    assert message.startswith(f"{check}: ") or message.startswith(f"{check} raised"), message
    for pattern in patterns:
        assert pattern.lower() in message.lower(), f"{pattern!r} not in the diagnosis of {variant}:\n{message}"
    _assert_no_leak(message)
    assert "✓" not in capsys.readouterr().out


def test_torch_where_passes_with_a_note_about_nan_gradients(capsys):
    exercises.check_joint_relations(lambda h: _cos(h.flatten(2), "where"))
    out = capsys.readouterr().out
    assert out.startswith("✓ joint_relations") and "note: the gradient at an all-zero joint map is NaN" in out
    exercises.check_joint_relations(lambda h: _cos(h.flatten(2), "clamp-1e-8"))
    assert "note:" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# the shortcut is closed only while a check runs the learner's code
# ------------------------------------------------------------------------------------------------
def test_reference_functions_work_outside_the_learners_code():
    from ikd_edu.codec import encode_heatmaps
    from ikd_edu.distill.structure import joint_relations, pairwise_affinity

    hm, w = encode_heatmaps(torch.tensor([[[3.0, 4.0]]]), torch.ones(1, 1), (8, 6), 1.0)
    assert hm.shape == (1, 1, 8, 6) and float(hm.max()) == 1.0 and float(w) == 1.0
    x = torch.rand(1, 3, 4, 4)
    assert pairwise_affinity(x).shape == (1, 16, 16) and joint_relations(x).shape == (1, 3, 3)


def test_every_reference_is_guarded():
    names = set(registered())
    for expected in ("ikd_edu.codec.encode_heatmaps", "ikd_edu.distill.ground_truth.joints_mse",
                     "ikd_edu.distill.ground_truth.JointsMSELoss.forward", "ikd_edu.distill.logit.LogitDistillation.forward",
                     "ikd_edu.distill.feature.FeatureDistillation.forward",
                     "ikd_edu.distill.structure.pairwise_affinity", "ikd_edu.distill.structure.affinity_at",
                     "ikd_edu.distill.structure.joint_relations", "ikd_edu.distill.integral.decay_factor"):
        assert expected in names, expected


@pytest.mark.parametrize("check, fn, reference", [
    ("encode", lambda kp, vis, size, sigma: _with_library("ikd_edu.codec", "encode_heatmaps")(kp, vis, size, sigma),
     "encode_heatmaps"),
    ("logit_kd", lambda s, t, g, w, a: _with_library("ikd_edu.distill", "LogitDistillation")(a, "mse")(s, t, g, w),
     "LogitDistillation"),
    ("logit_kd", lambda s, t, g, w, a: (1 - a) * _with_library("ikd_edu.distill", "joints_mse")(s, g, w)
     + a * _mse(s, t.detach()), "joints_mse"),
    ("feature_kd", _library_feature, "FeatureDistillation"),
    ("affinity", _with_library("ikd_edu.distill", "pairwise_affinity"), "pairwise_affinity"),
    ("joint_relations", _with_library("ikd_edu.distill", "joint_relations"), "joint_relations"),
], ids=["encode_heatmaps", "LogitDistillation", "joints_mse", "FeatureDistillation", "pairwise_affinity",
        "joint_relations"])
def test_calling_a_reference_function_fails_and_says_so(check, fn, reference):
    with pytest.raises(AssertionError) as info:
        CHECKS[check](fn)
    message = str(info.value)
    assert "a reference function was called" in message and reference in message, message
    assert "write the computation yourself" in message.lower()


def test_a_reference_called_from_another_thread_is_caught_too():
    def threaded(h):
        result = {}

        def work():
            try:
                result["r"] = _with_library("ikd_edu.distill.structure", "joint_relations")(h)
            except Exception as exc:  # noqa: BLE001 - the learner swallows it
                result["e"] = exc

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        return result.get("r", _cos(h.flatten(2), "normalize"))

    with pytest.raises(AssertionError, match="a reference function was called"):
        exercises.check_joint_relations(threaded)


# ------------------------------------------------------------------------------------------------
# replacing a check, or what it compares with, is detected (each case in a fresh interpreter)
# ------------------------------------------------------------------------------------------------
_TAMPER_SCRIPT = textwrap.dedent('''
    import json, sys, importlib
    import torch
    import ikd_edu.distill.structure as structure
    import ikd_edu.exercises as ex

    def right(h):
        v = torch.nn.functional.normalize(h.flatten(2), dim=-1)
        return v @ v.transpose(1, 2)

    def run(check):
        try:
            check(right)
            return "passed"
        except AssertionError as exc:
            return "failed: " + str(exc)

    import ikd_edu.exercise_guard
    original_relations, original_allclose = structure.joint_relations, torch.allclose

    def fresh():
        """Undo the last case's changes and reload the checks: a new kernel, as far as they can tell."""
        structure.joint_relations, torch.allclose = original_relations, original_allclose
        return importlib.reload(ex)

    results = {}
    for case in sys.argv[1:]:
        ex = fresh()
        result = results[case] = {}
        if case == "setattr":
            try:
                ex.check_joint_relations = lambda fn: print("pretend")
                result["assign"] = "allowed"
            except AttributeError as exc:
                result["assign"] = str(exc)
            from ikd_edu.exercises import check_joint_relations
            result["check"] = run(check_joint_relations)
        elif case == "dict":
            vars(ex)["check_joint_relations"] = lambda fn: print("pretend")
            from ikd_edu.exercises import check_joint_relations
            result["check"] = run(check_joint_relations)
        elif case == "helper":
            vars(ex)["_close"] = lambda *a, **k: True
            result["check"] = run(ex.check_joint_relations)
        elif case == "reference":
            structure.joint_relations = right
            result["check"] = run(ex.check_joint_relations)
        elif case == "torch":
            torch.allclose = lambda *a, **k: True
            result["check"] = run(ex.check_joint_relations)
        elif case == "inside":
            def sneaky(h):
                vars(ex)["_close"] = lambda *a, **k: True
                return h.flatten(2) @ h.flatten(2).transpose(1, 2)  # wrong: not normalised
            try:
                ex.check_joint_relations(sneaky)
                result["check"] = "passed"
            except AssertionError as exc:
                result["check"] = "failed: " + str(exc)
        elif case == "clean":
            result["check"] = run(ex.check_joint_relations)
    print("RESULT " + json.dumps(results))
''')


TAMPER_CASES = ["clean", "setattr", "dict", "helper", "reference", "torch", "inside", "clean"]


@pytest.fixture(scope="module")
def tampering() -> dict:
    """Every tampering case, each after a reload of the checks, in one fresh interpreter (a torch import is slow)."""
    proc = subprocess.run([sys.executable, "-c", _TAMPER_SCRIPT, *TAMPER_CASES], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("case", sorted(set(TAMPER_CASES)))
def test_replacing_a_check_or_its_reference_is_detected(case, tampering):
    result = tampering[case]
    if case == "clean":  # before and after the others: a reload (a new kernel) starts clean
        assert result["check"] == "passed", result
        return
    assert result["check"].startswith("failed: joint_relations"), result
    assert "monkey-patching" in result["check"] and "restart the kernel" in result["check"], result
    if case == "setattr":
        assert "can't be replaced" in result["assign"], result


# ------------------------------------------------------------------------------------------------
# the time budget
# ------------------------------------------------------------------------------------------------
def _sleepy(h):
    time.sleep(60)
    return _cos(h.flatten(2), "normalize")


def _endless(h):
    while True:
        pass


def _stubborn(h):
    """An endless loop that swallows the first interruption, then loops again."""
    try:
        while True:
            pass
    except BaseException:  # noqa: BLE001
        pass
    while True:
        pass


def _assert_too_slow(message: str, budget: float) -> None:
    assert message.startswith("joint_relations: stopped after"), message
    assert "too slow" in message and f"{budget:g} s" in message, message


@pytest.mark.parametrize("fn", [_sleepy, _endless, _stubborn], ids=["sleep", "endless-loop", "swallows-the-stop"])
def test_a_slow_solution_is_stopped_and_told(fn):
    with pytest.raises(AssertionError) as info:
        exercises.check_joint_relations(fn, budget_s=0.5)
    _assert_too_slow(str(info.value), 0.5)
    exercises.check_joint_relations(lambda h: _cos(h.flatten(2), "normalize"))  # the next check is unaffected


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(exercises.BUDGET_ENV, "0.5")
    with pytest.raises(AssertionError) as info:
        exercises.check_joint_relations(_endless)
    _assert_too_slow(str(info.value), 0.5)
    monkeypatch.setenv(exercises.BUDGET_ENV, "soon")
    with pytest.raises(ValueError, match="IKD_CHECK_BUDGET_S"):
        exercises.check_joint_relations(_endless)
    with pytest.raises(ValueError, match="> 0"):
        exercises.check_joint_relations(_endless, budget_s=0)


def test_the_budget_works_off_the_main_thread():
    """Off the main thread there is no SIGALRM: a watchdog thread stops the learner's loop."""
    outcome = {}

    def run():
        try:
            exercises.check_joint_relations(_endless, budget_s=0.5)
            outcome["message"] = "passed"
        except AssertionError as exc:
            outcome["message"] = str(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the check did not stop"
    _assert_too_slow(outcome["message"], 0.5)


def test_an_outer_alarm_is_restored():
    """pytest-timeout (or anything else) may have set SIGALRM already: a check leaves it as it was."""
    import signal

    fired = []

    def outer(*_):
        fired.append(1)

    previous = signal.signal(signal.SIGALRM, outer)
    previous_timer = signal.getitimer(signal.ITIMER_REAL)
    try:
        signal.setitimer(signal.ITIMER_REAL, 300)
        exercises.check_joint_relations(lambda h: _cos(h.flatten(2), "normalize"), budget_s=30)
        with pytest.raises(AssertionError):
            exercises.check_joint_relations(_endless, budget_s=0.3)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert left > 0, "the outer alarm was lost"
        assert signal.getsignal(signal.SIGALRM) is outer and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, *previous_timer)
        signal.signal(signal.SIGALRM, previous)
