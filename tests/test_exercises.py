"""Exercise checks: the library's own function passes; each typical mistake fails with a message naming it.

Every wrong version below is a deliberate, realistic learner mistake; the test asserts that the
check's message names *that* mistake (and never leaks tensors/expected values).

The library's reference functions are switched off inside a learner's function while a check
runs (see tests/test_exercise_variants.py), so the variants here build on hand-written
implementations (``encode_heatmaps`` below), never on the library's.
"""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ikd_edu import exercises


def encode_heatmaps(kp, vis, size, sigma=2.0, unbiased=False):
    """A hand-written reference encoder (the notebook's solution, plus DARK's unbiased centre)."""
    h, w = size
    kp = torch.as_tensor(kp, dtype=torch.float64)
    vis = torch.as_tensor(vis)
    mu = torch.trunc(kp + 0.5)  # (N, K, 2) rounded centre
    ul, br = torch.trunc(mu - 3 * sigma), torch.trunc(mu + 3 * sigma + 1)
    off_map = (ul[..., 0] >= w) | (ul[..., 1] >= h) | (br[..., 0] < 0) | (br[..., 1] < 0)
    weight = (vis > 0) & ~off_map  # (N, K)
    centre = kp if unbiased else mu
    xs, ys = torch.arange(w, dtype=torch.float64), torch.arange(h, dtype=torch.float64)
    gx = torch.exp(-((xs - centre[..., 0:1]) ** 2) / (2 * sigma**2)) * ((xs >= ul[..., 0:1]) & (xs < br[..., 0:1]))
    gy = torch.exp(-((ys - centre[..., 1:2]) ** 2) / (2 * sigma**2)) * ((ys >= ul[..., 1:2]) & (ys < br[..., 1:2]))
    heatmaps = gy[..., :, None] * gx[..., None, :] * weight[..., None, None]  # (N, K, h, w)
    return heatmaps.float(), weight.float()


def _fails(check, fn, *patterns: str) -> str:
    with pytest.raises(AssertionError) as info:
        check(fn)
    message = str(info.value)
    for pattern in patterns:
        assert pattern.lower() in message.lower(), f"{pattern!r} not in the message:\n{message}"
    assert "tensor(" not in message and "array(" not in message, f"the message leaks values:\n{message}"
    return message


def _not_written(*_args, **_kwargs):
    raise NotImplementedError()


# ------------------------------------------------------------------------------------------- encode
def test_encode_hand_written_passes(capsys):
    exercises.check_encode(encode_heatmaps)
    out = capsys.readouterr().out
    assert out.startswith("✓ encode matches ikd_edu.codec.encode_heatmaps on 5 random cases")


def test_encode_not_written():
    _fails(exercises.check_encode, _not_written, exercises.NOT_WRITTEN)


def test_encode_mistakes():
    def ones_weight(kp, vis, size, sigma):
        hm, w = encode_heatmaps(kp, vis, size, sigma)
        return hm, torch.ones_like(w)

    def occluded_dropped(kp, vis, size, sigma):
        return encode_heatmaps(kp, (vis == 2).float(), size, sigma)

    def off_map_kept(kp, vis, size, sigma):
        hm, _ = encode_heatmaps(kp, vis, size, sigma)
        return hm, (vis > 0).float()

    def normalised(kp, vis, size, sigma):
        hm, w = encode_heatmaps(kp, vis, size, sigma)
        return hm / hm.sum((2, 3), keepdim=True).clamp_min(1e-12), w

    def swapped_hw(kp, vis, size, sigma):
        hm, w = encode_heatmaps(kp, vis, size, sigma)
        return hm.transpose(2, 3), w

    def swapped_xy(kp, vis, size, sigma):
        hm, _ = encode_heatmaps(kp.flip(-1), vis, size, sigma)
        return hm, encode_heatmaps(kp, vis, size, sigma)[1]

    def unbiased(kp, vis, size, sigma):
        return encode_heatmaps(kp, vis, size, sigma, unbiased=True)

    def no_window(kp, vis, size, sigma):  # the Gaussian on the whole map
        h, w = size
        _, weight = encode_heatmaps(kp, vis, size, sigma)
        mu = torch.trunc(kp.double() + 0.5)
        gx = torch.exp(-(torch.arange(w) - mu[..., :1]) ** 2 / (2 * sigma**2))
        gy = torch.exp(-(torch.arange(h) - mu[..., 1:]) ** 2 / (2 * sigma**2))
        return gy[..., :, None] * gx[..., None, :] * weight[..., None, None], weight

    def wrong_width(kp, vis, size, sigma):
        hm, w = encode_heatmaps(kp, vis, size, sigma)
        return hm ** 2, w  # exp(-d^2 / sigma^2)

    _fails(exercises.check_encode, ones_weight, "visible == 0", "target_weight 0")
    _fails(exercises.check_encode, occluded_dropped, "visible == 1")
    _fails(exercises.check_encode, off_map_kept, "off the map")
    _fails(exercises.check_encode, normalised, "sum 1", "peak")
    _fails(exercises.check_encode, swapped_hw, "h and w are swapped")
    _fails(exercises.check_encode, swapped_xy, "x and y are swapped")
    _fails(exercises.check_encode, unbiased, "rounds the centre")
    _fails(exercises.check_encode, no_window, "outside the window")
    _fails(exercises.check_encode, wrong_width, "2 sigma^2")
    _fails(exercises.check_encode, lambda kp, vis, size, sigma: encode_heatmaps(kp, vis, size, sigma)[0],
           "tuple (heatmaps, target_weight)")


def test_encode_reports_the_learners_exception_with_context():
    def broken(kp, vis, size, sigma):
        return torch.zeros(2, 3) @ torch.zeros(4, 5), None

    message = _fails(exercises.check_encode, broken, "encode raised RuntimeError", "keypoints (3, 17, 2)")
    assert "size=(h, w)" in message


# ----------------------------------------------------------------------------------------- logit KD
def _logit_library(s, t, g, w, alpha):
    """The formula as the library writes it: weighted GT term, detached teacher term, mixed by alpha."""
    return (1 - alpha) * 0.5 * ((s - g) * w[:, :, None, None]).pow(2).mean() + alpha * 0.5 * (s - t.detach()).pow(2).mean()


def _mse(a, b, w=None):
    d = a - b if w is None else (a - b) * w[:, :, None, None]
    return 0.5 * d.pow(2).mean()


def test_logit_kd_library_and_a_hand_written_solution_pass(capsys):
    exercises.check_logit_kd(_logit_library)
    exercises.check_logit_kd(lambda s, t, g, w, a: (1 - a) * _mse(s, g, w) + a * _mse(s, t.detach()))
    out = capsys.readouterr().out
    assert "✓ logit_kd matches ikd_edu.distill.LogitDistillation" in out and "on 6 random cases" in out


@pytest.mark.parametrize("wrong, patterns", [
    (lambda s, t, g, w, a: (1 - a) * _mse(s, g) + a * _mse(s, t.detach()), ["target weight is ignored"]),
    (lambda s, t, g, w, a: (1 - a) * _mse(s, g, w) + a * _mse(s, t.detach(), w), ["teacher term is weighted"]),
    (lambda s, t, g, w, a: a * _mse(s, g, w) + (1 - a) * _mse(s, t.detach()), ["alpha"]),
    (lambda s, t, g, w, a: (1 - a) * _mse(s, g, w) + a * _mse(s, t), ["gradient reaches the teacher", "detach"]),
    (lambda s, t, g, w, a: 2 * ((1 - a) * _mse(s, g, w) + a * _mse(s, t.detach())), ["factor 0.5"]),
    (lambda s, t, g, w, a: ((1 - a) * _mse(s, g, w) + a * _mse(s, t.detach())) * s.numel(), ["summed"]),
    (lambda s, t, g, w, a: _mse(s, g, w) + _mse(s, t.detach()), ["alpha"]),
    (lambda s, t, g, w, a: (1 - a) * _mse(s, g, w), ["teacher term"]),
    (lambda s, t, g, w, a: (1 - a) * _mse(s, g, w) + a * _mse(s, t.detach()).item(),  # a constant teacher term
     ["gradient with respect to student_hm"]),
    (lambda s, t, g, w, a: float((1 - a) * _mse(s, g, w) + a * _mse(s, t.detach())), ["python number"]),
    (lambda s, t, g, w, a: ((1 - a) * _mse(s, g, w) + a * _mse(s, t.detach())).detach(), ["no gradient", "student"]),
    (lambda s, t, g, w, a: (1 - a) * 0.5 * ((s - g) * w).pow(2).mean() + a * _mse(s, t.detach()),
     ["target_weight[:, :, None, None]"]),
    (lambda s, t, g, w, a: torch.stack([(1 - a) * _mse(s, g, w), a * _mse(s, t.detach())]), ["scalar"]),
], ids=["no-target-weight", "weighted-teacher", "alpha-inverted", "teacher-grad", "no-half", "sum", "alpha-ignored",
        "no-teacher-term", "item-in-teacher-term", "python-float", "detached", "broadcast", "not-scalar"])
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_logit_kd_mistakes(wrong, patterns):
    _fails(exercises.check_logit_kd, wrong, *patterns)


def test_logit_kd_not_written():
    _fails(exercises.check_logit_kd, _not_written, exercises.NOT_WRITTEN)


def test_logit_kd_kl_is_named():
    from ikd_edu.distill import heatmap_kl

    _fails(exercises.check_logit_kd, lambda s, t, g, w, a: (1 - a) * _mse(s, g, w) + a * heatmap_kl(s, t.detach()),
           "KL")


# --------------------------------------------------------------------------------------- feature KD
def _resize(x, size, **kw):
    kw = kw or {"mode": "bilinear", "align_corners": False}
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, **kw)


def _feature_solution(s, t, adapter):
    return (_resize(adapter(s), t.shape[-2:]) - t.detach()).pow(2).mean()


def test_feature_kd_solutions_pass(capsys):
    exercises.check_feature_kd(_feature_solution)
    exercises.check_feature_kd(lambda s, t, adapter: F.mse_loss(adapter(_resize(s, t.shape[-2:])), t.detach()))
    out = capsys.readouterr().out
    assert "✓ feature_kd matches ikd_edu.distill.FeatureDistillation" in out and "on 5 random cases" in out


@pytest.mark.parametrize("wrong, patterns", [
    (lambda s, t, a: (_resize(a(s), t.shape[-2:]) - t).pow(2).mean(), ["gradient reaches the teacher"]),
    (lambda s, t, a: (_resize(s, t.shape[-2:]) - t.detach()).pow(2).mean(), ["adapter"]),
    (lambda s, t, a: (a(s) - t.detach()).pow(2).mean(), ["resize", "teacher's (H, W)"]),
    (lambda s, t, a: (a(s) - _resize(t.detach(), s.shape[-2:])).pow(2).mean(), ["teacher is resized"]),
    (lambda s, t, a: (_resize(a(s), t.shape[-2:], mode="nearest") - t.detach()).pow(2).mean(), ["nearest"]),
    (lambda s, t, a: (_resize(a(s), t.shape[-2:], mode="bilinear", align_corners=True) - t.detach()).pow(2).mean(),
     ["align_corners"]),
    (lambda s, t, a: 0.5 * _feature_solution(s, t, a), ["0.5"]),
    (lambda s, t, a: _feature_solution(s, t, a) * t.shape[1], ["summed over channels"]),
    (lambda s, t, a: _feature_solution(s, t, a) * t.numel(), ["summed"]),
    (lambda s, t, a: (_resize(a(s), t.shape[-2:]) - t.detach()).abs().mean(), ["L1"]),
    (lambda s, t, a: (_resize(a(s).detach(), t.shape[-2:]) - t.detach()).pow(2).mean(), ["no gradient"]),
    (lambda s, t, a: (_resize(a(s.detach()), t.shape[-2:]) - t.detach()).pow(2).mean(), ["student_feat"]),
    (lambda s, t, a: (_resize(a(t), s.shape[-2:]) - s).pow(2).mean(), ["apply it to student_feat"]),
    (lambda s, t, a: (_resize(a(s), t.shape[-2:]) - t.detach()).pow(2).mean((1, 2, 3)), ["scalar"]),
], ids=["teacher-grad", "no-adapter", "no-resize", "resize-teacher", "nearest", "align-corners", "half", "sum-c",
        "sum", "l1", "adapter-detached", "student-detached", "adapter-on-teacher", "not-scalar"])
def test_feature_kd_mistakes(wrong, patterns):
    _fails(exercises.check_feature_kd, wrong, *patterns)


def test_feature_kd_adapter_under_no_grad():
    def frozen_adapter(s, t, adapter):
        with torch.no_grad():
            adapted = adapter(s)
        return (_resize(adapted, t.shape[-2:]) - t.detach()).pow(2).mean()

    _fails(exercises.check_feature_kd, frozen_adapter, "no gradient")
    _fails(exercises.check_feature_kd, _not_written, exercises.NOT_WRITTEN)


# ----------------------------------------------------------------------------------------- affinity
def _pool(x):
    h, w = x.shape[-2:]
    return F.adaptive_avg_pool2d(x, (min(h, 16), min(w, 12)))


def _affinity_solution(features):
    v = _pool(features).flatten(2).transpose(1, 2)  # (N, P, C)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return v @ v.transpose(1, 2)


def test_affinity_solutions_pass(capsys):
    exercises.check_affinity(_affinity_solution)
    exercises.check_affinity(lambda x: F.cosine_similarity(
        _pool(x).flatten(2).unsqueeze(-1), _pool(x).flatten(2).unsqueeze(-2), dim=1, eps=1e-12))
    out = capsys.readouterr().out
    assert "✓ affinity matches ikd_edu.distill.structure.pairwise_affinity on 5 random cases" in out


def _unnormalised(x):
    v = _pool(x).flatten(2)
    return v.transpose(1, 2) @ v


def _no_eps(x):
    v = _pool(x).flatten(2).transpose(1, 2)
    v = v / v.norm(dim=-1, keepdim=True)
    return v @ v.transpose(1, 2)


def _channel_normalised(x):
    v = F.normalize(_pool(x).flatten(2), dim=-1)  # each channel over positions
    return v.transpose(1, 2) @ v


def _global_normalised(x):
    v = _pool(x).flatten(2)
    v = v / v.norm(dim=(1, 2), keepdim=True)
    return v.transpose(1, 2) @ v


def _gram_channels(x):
    v = F.normalize(_pool(x).flatten(2).transpose(1, 2), dim=-1)
    return v.transpose(1, 2) @ v


def _column_major(x):
    v = F.normalize(_pool(x).transpose(-1, -2).flatten(2).transpose(1, 2), dim=-1)
    return v @ v.transpose(1, 2)


def _no_pool(x):
    v = F.normalize(x.flatten(2).transpose(1, 2), dim=-1)
    return v @ v.transpose(1, 2)


def _max_pool(x):
    h, w = x.shape[-2:]
    v = F.normalize(F.adaptive_max_pool2d(x, (min(h, 16), min(w, 12))).flatten(2).transpose(1, 2), dim=-1)
    return v @ v.transpose(1, 2)


def _always_16x12(x):
    v = F.normalize(F.adaptive_avg_pool2d(x, (16, 12)).flatten(2).transpose(1, 2), dim=-1)
    return v @ v.transpose(1, 2)


@pytest.mark.parametrize("wrong, patterns", [
    (_unnormalised, ["not scale-invariant"]),
    (_no_eps, ["NaN", "eps"]),
    (_channel_normalised, ["A_ii must be 1"]),
    (_global_normalised, ["A_ii must be 1"]),
    (_gram_channels, ["(N, C, C)", "positions"]),
    (_column_major, ["row-major"]),
    (_no_pool, ["average-pool", "16 x 12"]),
    (_max_pool, ["max-pooling"]),
    (_always_16x12, ["used as they are"]),
    (lambda x: _affinity_solution(x)[0], ["batch axis"]),
    (lambda x: torch.from_numpy(_affinity_solution(x).detach().numpy()), ["keep it in torch"]),
], ids=["unnormalised", "no-eps", "channel-normalised", "global-normalised", "channel-gram", "column-major",
        "no-pool", "max-pool", "always-pool", "no-batch", "numpy"])
def test_affinity_mistakes(wrong, patterns):
    _fails(exercises.check_affinity, wrong, *patterns)


def test_affinity_not_written():
    _fails(exercises.check_affinity, _not_written, exercises.NOT_WRITTEN)


# ---------------------------------------------------------------------------------- joint relations
def _relations_solution(heatmaps):
    v = heatmaps.flatten(2)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return v @ v.transpose(1, 2)


def test_joint_relations_solutions_pass(capsys):
    exercises.check_joint_relations(_relations_solution)
    assert "✓ joint_relations matches ikd_edu.distill.structure.joint_relations on 4 random cases" in \
        capsys.readouterr().out


def _pixel_affinity(h):
    v = F.normalize(h.flatten(2), dim=1)
    return v.transpose(1, 2) @ v


def _correlation(h):
    v = h.flatten(2)
    v = F.normalize(v - v.mean(-1, keepdim=True), dim=-1)
    return v @ v.transpose(1, 2)


@pytest.mark.parametrize("wrong, patterns", [
    (lambda h: h.flatten(2) @ h.flatten(2).transpose(1, 2), ["not scale-invariant"]),
    (lambda h: (lambda v: v @ v.transpose(1, 2))(h.flatten(2) / h.flatten(2).norm(dim=-1, keepdim=True)), ["NaN"]),
    (_pixel_affinity, ["(N, h*w, h*w)"]),
    (_correlation, ["correlation"]),
    (lambda h: _relations_solution(h)[0], ["batch axis"]),
    (_not_written, [exercises.NOT_WRITTEN]),
], ids=["unnormalised", "no-eps", "pixels", "correlation", "no-batch", "not-written"])
def test_joint_relations_mistakes(wrong, patterns):
    _fails(exercises.check_joint_relations, wrong, *patterns)
