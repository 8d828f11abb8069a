"""Automatic checks for the course's exercises (the nbgrader "check" cells call these).

Each ``check_*`` compares a learner's function with the library's on random inputs. When they
disagree it *probes* the function to find out what is wrong (a zeroed target weight that
still changes the loss, a gradient that reaches the teacher, a result that changes when the
features are scaled ...) and raises :class:`AssertionError` with a message that says what to
fix. Messages name shapes and rules, never the expected numbers or the solution code, so
they can be shown to a student as they are. On success one line is printed::

    ✓ logit_kd matches ikd_edu.distill.LogitDistillation on 12 random cases

==========================  ========  ========================================================
check                       notebook  the library function it is compared with
==========================  ========  ========================================================
:func:`check_encode`        01        ``ikd_edu.codec.encode_heatmaps`` (reference encoding)
:func:`check_logit_kd`      03        ``ikd_edu.distill.LogitDistillation(alpha, "mse")``
:func:`check_feature_kd`    04        ``ikd_edu.distill.FeatureDistillation`` (``"l2"``)
:func:`check_affinity`      05        ``ikd_edu.distill.structure.pairwise_affinity``
:func:`check_joint_relations` 05      ``ikd_edu.distill.structure.joint_relations``
==========================  ========  ========================================================

Every check runs in well under a second on a laptop CPU (small random tensors, float64).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F

__all__ = ["check_encode", "NOT_WRITTEN"]

NOT_WRITTEN = "not written yet: replace `raise NotImplementedError()` with your code"

_ATOL = 1e-5
_RTOL = 1e-4


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------
def _shape(t) -> str:
    return "(" + ", ".join(str(int(s)) for s in t.shape) + ")"


def _fail(name: str, message: str):
    raise AssertionError(f"{name}: {message}")


def _call(fn: Callable, name: str, args: tuple, described: str, hints: tuple[tuple[str, str], ...] = ()):
    """``fn(*args)``; NotImplementedError -> "not written yet", other errors -> AssertionError with context."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise AssertionError(f"{name}: {NOT_WRITTEN}") from None
    except AssertionError:
        raise
    except Exception as exc:  # the learner's own bug: say where, keep their traceback chained
        text = f"{type(exc).__name__}: {exc}"
        extra = next((hint for needle, hint in hints if needle.lower() in text.lower()), "")
        raise AssertionError(f"{name} raised {text}\n  (called with {described}){extra}") from exc


def _as_tensor(value, name: str, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return torch.from_numpy(value)
    except ImportError:  # pragma: no cover - numpy is a dependency of torch here
        pass
    _fail(name, f"{what} must be a torch.Tensor, got {type(value).__name__}")


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = _ATOL, rtol: float = _RTOL) -> bool:
    a, b = a.detach().double(), b.detach().double()
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and torch.allclose(a, b, atol=atol, rtol=rtol)


def _scalar(value, name: str) -> torch.Tensor:
    t = _as_tensor(value, name, "the loss")
    if t.numel() != 1 or t.dim() > 1:
        _fail(name, f"must return a scalar (a 0-d tensor) but returned shape {_shape(t)}: average over every "
                    "axis (instances, joints/channels and pixels), as the formula's mean does")
    return t.reshape(())


def _ok(name: str, library: str, cases: int) -> None:
    print(f"✓ {name} matches {library} on {cases} random cases")


# ----------------------------------------------------------------------------------------------
# notebook 01: the target encoder
# ----------------------------------------------------------------------------------------------
def _encode_cases():
    gen = torch.Generator().manual_seed(1234)
    for (h, w), sigma in (((32, 24), 2.0), ((64, 48), 2.0), ((17, 13), 1.5), ((32, 24), 3.0), ((20, 28), 1.0)):
        n, k = 3, 17
        kp = torch.rand(n, k, 2, generator=gen, dtype=torch.float64) * torch.tensor([w + 16.0, h + 16.0]) - 8
        vis = torch.randint(0, 3, (n, k), generator=gen)
        vis[0, :3] = 1  # occluded but labelled joints count
        vis[1, :3] = 2
        kp[2, 0] = torch.tensor([w + 20.0, h / 2])  # far off the map on the right, labelled
        kp[2, 1] = torch.tensor([w / 2, -20.0])  # far above
        vis[2, :2] = 2
        yield kp.float(), vis, (h, w), sigma


def check_encode(fn: Callable) -> None:
    """Check ``fn(keypoints (N, K, 2), visible (N, K), size=(h, w), sigma) -> (heatmaps, target_weight)``.

    Reference: :func:`ikd_edu.codec.encode_heatmaps` (rounded centre ``int(x + 0.5)``, window
    ``ul <= (x, y) < br`` with ``tmp_size = 3 sigma``, peak 1, weight = visible and on the map).
    """
    from ikd_edu.codec import encode_heatmaps

    name = "encode"
    count = 0
    for kp, vis, (h, w), sigma in _encode_cases():
        n, k = vis.shape
        out = _call(fn, name, (kp.clone(), vis.clone(), (h, w), sigma),
                    f"keypoints {_shape(kp)}, visible {_shape(vis)}, size=(h, w)=({h}, {w}), sigma={sigma}",
                    hints=(("size", "\n  hint: size is (h, w): rows first, then columns"),))
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            _fail(name, f"must return a tuple (heatmaps, target_weight); got {type(out).__name__}"
                        + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
        hm = _as_tensor(out[0], name, "heatmaps")
        weight = _as_tensor(out[1], name, "target_weight")
        if tuple(hm.shape) != (n, k, h, w):
            if tuple(hm.shape) == (n, k, w, h):
                _fail(name, f"heatmaps have shape {_shape(hm)}: h and w are swapped; size is (h, w) = ({h}, {w}) "
                            "and a heatmap is indexed [y, x] (rows = h)")
            _fail(name, f"heatmaps have shape {_shape(hm)} for N={n}, K={k}, size=(h, w)=({h}, {w}); "
                        "expected (N, K, h, w)")
        if tuple(weight.reshape(weight.shape[:2]).shape if weight.dim() == 3 and weight.shape[-1] == 1
                 else weight.shape) != (n, k):
            _fail(name, f"target_weight has shape {_shape(weight)}; expected (N, K) = ({n}, {k})")
        weight = weight.reshape(n, k).double()
        hm = hm.double()
        if not bool(torch.isfinite(hm).all()):
            _fail(name, "heatmaps contain NaN or inf values")
        ref_hm, ref_w = (t.double() for t in encode_heatmaps(kp, vis, (h, w), sigma))
        labelled = vis > 0
        if not torch.equal(weight, ref_w):
            if bool((weight[~labelled] != 0).any()):
                _fail(name, "joints with visible == 0 (not labelled) must get target_weight 0")
            if bool((weight[(vis == 1) & (ref_w == 1)] == 0).any()):
                _fail(name, "joints with visible == 1 are labelled (only occluded): they count, target_weight 1")
            if bool((weight[ref_w == 0] != 0).any()):
                _fail(name, "a labelled joint whose Gaussian window lies completely off the map must get "
                            "target_weight 0 (ul_x >= w or ul_y >= h or br_x < 0 or br_y < 0)")
            _fail(name, f"target_weight is 0 for {int(((weight == 0) & (ref_w == 1)).sum())} labelled joints "
                        "whose window touches the map: only not-labelled or off-map joints get 0")
        if _close(hm, ref_hm):
            count += 1
            continue
        swapped, _ = encode_heatmaps(kp.flip(-1), vis, (h, w), sigma)
        if _close(hm, swapped.double()):
            _fail(name, "x and y are swapped: keypoints are (x, y), x is the column (width) and y the row (height)")
        unbiased, _ = encode_heatmaps(kp, vis, (h, w), sigma, unbiased=True)
        if _close(hm, unbiased.double(), atol=1e-4):
            _fail(name, "the Gaussian is centred at the exact sub-pixel point; the reference rounds the centre "
                        "first: x0 = int(x + 0.5), y0 = int(y + 0.5)")
        if bool((hm[ref_w == 0] != 0).any()):
            _fail(name, "joints with target_weight 0 must have all-zero heatmaps")
        on = ref_hm.amax(dim=(2, 3)) > 0.99  # joints whose peak lies on the map
        if bool(on.any()):
            peaks = hm.amax(dim=(2, 3))[on]
            if bool(((peaks - 1).abs() > 1e-3).any()):
                sums = hm.sum(dim=(2, 3))[on]
                if bool(((sums - 1).abs() < 1e-3).all()):
                    _fail(name, "the Gaussians are normalised to sum 1; the reference target has peak value 1 "
                                "(no normalising constant)")
                _fail(name, "the peak of each Gaussian (at its centre) must be exactly 1")
        outside = (ref_hm == 0) & (ref_w[..., None, None] == 1)
        if bool((hm[outside].abs() > 1e-6).any()):
            _fail(name, "pixels outside the window ul <= (x, y) < br (tmp_size = 3 sigma around the rounded centre) "
                        "must be 0: the reference draws the Gaussian only inside that window")
        _fail(name, f"heatmaps differ on {int(((hm - ref_hm).abs() > _ATOL).sum())} pixels (size {h}x{w}, "
                    f"sigma {sigma}): check exp(-d^2 / (2 sigma^2)) with d measured from the rounded centre")
    _ok(name, "ikd_edu.codec.encode_heatmaps", count)
