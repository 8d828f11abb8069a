"""Distillation losses: each term against a naive loop over its formula, zeros, gradients, errors."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ikd_edu.distill import (
    AUTO_GRID,
    FeatureDistillation,
    IntegralKD,
    JointsMSELoss,
    LogitDistillation,
    StructureDistillation,
    affinity_at,
    affinity_loss,
    decay_factor,
    joint_relations,
    pairwise_affinity,
    pooled_grid_size,
    relation_loss,
)

N, K, H, W = 2, 3, 6, 5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def heatmaps(n=N, k=K, h=H, w=W, requires_grad=False):
    return torch.rand(n, k, h, w, dtype=torch.float64, requires_grad=requires_grad)


def weights(n=N, k=K):
    w = torch.ones(n, k, dtype=torch.float64)
    w[0, 1] = 0.0
    w[1, 2] = 0.5
    return w


# ----------------------------------------------------------------------------- naive references
def naive_joints_mse(s, g, w):
    total, count = 0.0, 0
    for n in range(s.shape[0]):
        for k in range(s.shape[1]):
            for y in range(s.shape[2]):
                for x in range(s.shape[3]):
                    total += (w[n, k] * (s[n, k, y, x] - g[n, k, y, x])) ** 2
                    count += 1
    return float(0.5 * total / count)


def naive_kl(s, t, tau, v=None):
    total = 0.0
    for n in range(s.shape[0]):
        for k in range(s.shape[1]):
            zs = [float(z) / tau for z in s[n, k].flatten()]
            zt = [float(z) / tau for z in t[n, k].flatten()]
            ls = math.log(sum(math.exp(z) for z in zs))
            lt = math.log(sum(math.exp(z) for z in zt))
            kl = sum(math.exp(b - lt) * ((b - lt) - (a - ls)) for a, b in zip(zs, zt))
            total += (1.0 if v is None else float(v[n, k])) * kl
    return tau * tau * total / (s.shape[0] * s.shape[1])


def cosine(a, b):
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    if na == 0 or nb == 0:
        return 0.0
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


def naive_affinity(features):
    """features (N, C, H, W), no pooling: A[n, i, j] with explicit loops over positions i, j."""
    n_, c_, h_, w_ = features.shape
    out = torch.zeros(n_, h_ * w_, h_ * w_, dtype=torch.float64)
    for n in range(n_):
        for i in range(h_ * w_):
            for j in range(h_ * w_):
                fi = [float(features[n, c, i // w_, i % w_]) for c in range(c_)]
                fj = [float(features[n, c, j // w_, j % w_]) for c in range(c_)]
                out[n, i, j] = cosine(fi, fj)
    return out


def naive_relations(hm):
    n_, k_ = hm.shape[:2]
    out = torch.zeros(n_, k_, k_, dtype=torch.float64)
    for n in range(n_):
        for k in range(k_):
            for l in range(k_):
                out[n, k, l] = cosine(hm[n, k].flatten().tolist(), hm[n, l].flatten().tolist())
    return out


def naive_structure_loss(a_s, a_t):
    """mean_n sum_ij (A^T_ij - A^S_ij)^2 / P^2 with loops."""
    n_, p_ = a_s.shape[:2]
    total = 0.0
    for n in range(n_):
        s = 0.0
        for i in range(p_):
            for j in range(p_):
                s += float(a_t[n, i, j] - a_s[n, i, j]) ** 2
        total += s / p_**2
    return total / n_


# ----------------------------------------------------------------------------- ground truth
def test_joints_mse_matches_naive_loop_and_reference_form():
    s, g, w = heatmaps(), heatmaps(), weights()
    loss = JointsMSELoss()(s, g, w)
    assert loss.item() == pytest.approx(naive_joints_mse(s, g, w), rel=1e-6)
    # SimpleBaseline: sum over joints of 0.5 * MSE(pred_k * w_k, gt_k * w_k) / K
    ref = sum(0.5 * F.mse_loss(s[:, k] * w[:, k, None, None], g[:, k] * w[:, k, None, None]) for k in range(K)) / K
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    unweighted = JointsMSELoss(use_target_weight=False)(s, g)
    assert unweighted.item() == pytest.approx(naive_joints_mse(s, g, torch.ones(N, K)), rel=1e-6)
    assert JointsMSELoss()(g, g, w).item() == 0.0


def test_joints_mse_errors():
    s = heatmaps()
    with pytest.raises(ValueError, match=r"\(2, 3, 6, 5\).*\(2, 4, 6, 5\).*num_joints"):
        JointsMSELoss()(s, heatmaps(k=4), weights())
    with pytest.raises(ValueError, match="target_weight"):
        JointsMSELoss()(s, s, torch.ones(N, K + 1))
    with pytest.raises(ValueError, match="use_target_weight=False"):
        JointsMSELoss()(s, s)
    # the reference loader's (N, K, 1) weights are accepted
    JointsMSELoss()(s, heatmaps(), weights()[..., None])


# ----------------------------------------------------------------------------- logit
@pytest.mark.parametrize("mode", ["mse", "kl"])
def test_logit_zero_when_student_equals_teacher_equals_gt(mode):
    t = heatmaps()
    loss = LogitDistillation(mode=mode, temperature=2.0)(t.clone(), t, t.clone(), weights())
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_logit_mse_parts_match_naive():
    s, t, g, w = heatmaps(), heatmaps(), heatmaps(), weights()
    kd = LogitDistillation(alpha=0.3)
    parts = kd.parts(s, t, g, w)
    assert set(parts) == {"gt", "logit"}
    assert parts["gt"].item() == pytest.approx(0.7 * naive_joints_mse(s, g, w), rel=1e-6)
    # teacher term: every joint weight 1 by default ...
    assert parts["logit"].item() == pytest.approx(0.3 * naive_joints_mse(s, t, torch.ones(N, K)), rel=1e-6)
    # ... or the given teacher weights
    restricted = kd.parts(s, t, g, w, teacher_weight=w)["logit"]
    assert restricted.item() == pytest.approx(0.3 * naive_joints_mse(s, t, w), rel=1e-6)
    assert kd(s, t, g, w).item() == pytest.approx((parts["gt"] + parts["logit"]).item(), rel=1e-12)


@pytest.mark.parametrize("mode", ["mse", "kl"])
def test_logit_teacher_weighting_option(mode):
    """teacher_weighting="target" applies the target weights to the teacher term (FPD-style code)."""
    s, t, g, w = heatmaps() * 4, heatmaps() * 4, heatmaps(), weights()
    assert (w == 0).any()  # some joints unlabelled, so the two weightings differ
    default = LogitDistillation(alpha=0.4, mode=mode)
    target = LogitDistillation(alpha=0.4, mode=mode, teacher_weighting="target")
    assert default.teacher_weighting == "all"
    naive = (lambda v: naive_joints_mse(s, t, v)) if mode == "mse" else (lambda v: naive_kl(s, t, 1.0, v))
    assert default.parts(s, t, g, w)["logit"].item() == pytest.approx(0.4 * naive(torch.ones(N, K)), rel=1e-6)
    assert target.parts(s, t, g, w)["logit"].item() == pytest.approx(0.4 * naive(w), rel=1e-6)
    assert target.parts(s, t, g, w)["logit"].item() != pytest.approx(default.parts(s, t, g, w)["logit"].item())
    with pytest.raises(ValueError, match="teacher_weighting"):
        LogitDistillation(teacher_weighting="labels")
    # the same option through IntegralKD (config: distill.logit_teacher_weighting)
    from ikd_edu.distill.integral import IntegralKD

    kd = IntegralKD(terms=["logit"], alpha=0.4, logit_mode=mode, logit_teacher_weighting="target")
    out = kd({"heatmaps": s}, {"heatmaps": t}, g, w)
    assert out["logit"].item() == pytest.approx(0.4 * naive(w), rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_logit_kl_matches_naive(tau):
    s, t, g, w = heatmaps() * 4, heatmaps() * 4, heatmaps(), weights()
    kd = LogitDistillation(alpha=0.5, mode="kl", temperature=tau)
    assert kd.distill_term(s, t).item() == pytest.approx(naive_kl(s, t, tau), rel=1e-6)
    assert kd.distill_term(s, t, w).item() == pytest.approx(naive_kl(s, t, tau, w), rel=1e-6)
    assert kd.parts(s, t, g, w)["logit"].item() == pytest.approx(0.5 * naive_kl(s, t, tau), rel=1e-6)


@pytest.mark.parametrize("mode", ["mse", "kl"])
def test_logit_gradients_reach_student_not_teacher(mode):
    s = heatmaps(requires_grad=True)
    t = heatmaps(requires_grad=True)
    LogitDistillation(alpha=1.0, mode=mode)(s, t, heatmaps(), weights()).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_logit_errors():
    with pytest.raises(ValueError, match="mode"):
        LogitDistillation(mode="l1")
    with pytest.raises(ValueError, match="alpha"):
        LogitDistillation(alpha=1.5)
    with pytest.raises(ValueError, match=r"student heatmaps \(2, 3, 6, 5\) and teacher heatmaps \(2, 3, 8, 5\)"):
        LogitDistillation()(heatmaps(), heatmaps(h=8), heatmaps(), weights())


# ----------------------------------------------------------------------------- feature
def identity_adapter(module: FeatureDistillation) -> None:
    conv = module.adapter[0]
    with torch.no_grad():
        conv.weight.copy_(torch.eye(conv.out_channels, conv.in_channels)[:, :, None, None])
        if conv.bias is not None:
            conv.bias.zero_()


def test_feature_l2_zero_and_matches_naive():
    fs, ft = torch.randn(2, 4, 3, 2), torch.randn(2, 6, 3, 2)
    fd = FeatureDistillation(4, 6, use_bn=False)
    weight, bias = fd.adapter[0].weight.detach()[:, :, 0, 0], fd.adapter[0].bias.detach()  # (C_t, C_s), (C_t,)
    total = 0.0
    for n, c, y, x in itertools.product(range(2), range(6), range(3), range(2)):
        adapted = float(bias[c]) + sum(float(weight[c, j]) * float(fs[n, j, y, x]) for j in range(4))
        total += (adapted - float(ft[n, c, y, x])) ** 2
    assert fd(fs, ft).item() == pytest.approx(total / (2 * 6 * 3 * 2), rel=1e-5)
    same = FeatureDistillation(5, 5, use_bn=False)
    identity_adapter(same)
    f = torch.randn(2, 5, 3, 2)
    assert same(f, f).item() == pytest.approx(0.0, abs=1e-12)


def test_feature_l2_resizes_student_to_teacher():
    fs, ft = torch.randn(2, 4, 6, 4), torch.randn(2, 4, 3, 2)
    fd = FeatureDistillation(4, 4, use_bn=False)
    expected = (F.interpolate(fd.adapter(fs), size=(3, 2), mode="bilinear", align_corners=False) - ft).pow(2).mean()
    assert fd(fs, ft).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"\(2, 4, 6, 4\).*\(2, 4, 3, 2\).*spatial size"):
        FeatureDistillation(4, 4, align="none")(fs, ft)


def test_feature_attention_matches_naive_and_ignores_channels_and_scale():
    fs, ft = torch.randn(2, 3, 4, 3, dtype=torch.float64), torch.randn(2, 7, 4, 3, dtype=torch.float64)
    fd = FeatureDistillation(None, None, mode="attention")
    assert fd.adapter is None and len(list(fd.parameters())) == 0

    def att(f, n):
        v = [sum(float(f[n, c, y, x]) ** 2 for c in range(f.shape[1])) / f.shape[1]
             for y in range(f.shape[2]) for x in range(f.shape[3])]
        norm = math.sqrt(sum(e * e for e in v))
        return [e / norm for e in v]

    naive = sum(sum((a - b) ** 2 for a, b in zip(att(fs, n), att(ft, n))) for n in range(2)) / 2
    assert fd(fs, ft).item() == pytest.approx(naive, rel=1e-6)
    assert fd(fs * 3.0, fs).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("mode", ["l2", "attention"])
def test_feature_gradients_reach_student_and_adapter_not_teacher(mode):
    fs = torch.randn(2, 4, 3, 2, requires_grad=True)
    ft = torch.randn(2, 6, 3, 2, requires_grad=True)
    fd = FeatureDistillation(4, 6, mode=mode)
    fd(fs, ft).backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert ft.grad is None
    for p in fd.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_feature_errors():
    with pytest.raises(ValueError, match="tap_channels"):
        FeatureDistillation(None, 8)
    fd = FeatureDistillation(4, 6)
    with pytest.raises(ValueError, match=r"student features \(2, 5, 3, 2\) have 5 channels.*student_channels=5"):
        fd(torch.randn(2, 5, 3, 2), torch.randn(2, 6, 3, 2))
    with pytest.raises(ValueError, match="4-D"):
        fd(torch.randn(2, 4, 6), torch.randn(2, 6, 3, 2))


# ----------------------------------------------------------------------------- structure
def test_pairwise_affinity_matches_naive_loops():
    f = torch.randn(2, 3, 3, 2, dtype=torch.float64)
    a = pairwise_affinity(f, pool=None)
    assert a.shape == (2, 6, 6)
    assert torch.allclose(a, naive_affinity(f), atol=1e-12)
    assert torch.allclose(torch.diagonal(a, dim1=1, dim2=2), torch.ones(2, 6, dtype=torch.float64))


def test_pairwise_affinity_pools_to_grid():
    assert pooled_grid_size((8, 6), "auto") == (8, 6)  # layer4 at 256x192: as is
    assert pooled_grid_size((64, 48), "auto") == AUTO_GRID == (16, 12)
    assert pooled_grid_size((32, 24), (4, 3)) == (4, 3)
    assert pooled_grid_size((2, 2), (4, 3)) == (2, 2)
    f = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    a = pairwise_affinity(f, pool=(4, 3))
    assert a.shape == (2, 12, 12)
    assert torch.allclose(a, naive_affinity(F.avg_pool2d(f, 2)), atol=1e-12)
    with pytest.raises(ValueError, match="pool"):
        pairwise_affinity(f, pool="big")


def test_affinity_invariant_to_scaling():
    f = torch.rand(2, 4, 4, 3, dtype=torch.float64) + 0.1
    a = pairwise_affinity(f, pool=(2, 3))
    assert torch.allclose(pairwise_affinity(f * 7.5, pool=(2, 3)), a, atol=1e-12)
    # per-position positive scaling (no pooling: positions are not mixed)
    scale = torch.rand(2, 1, 4, 3, dtype=torch.float64) * 10 + 0.01
    assert torch.allclose(pairwise_affinity(f * scale, pool=None), pairwise_affinity(f, pool=None), atol=1e-12)


def test_affinity_zero_vectors_are_safe():
    f = torch.randn(1, 3, 2, 2)
    f[0, :, 0, 1] = 0.0
    f.requires_grad_(True)
    a = pairwise_affinity(f, pool=None)
    assert torch.isfinite(a).all()
    assert torch.all(a[0, 1] == 0) and torch.all(a[0, :, 1] == 0)
    a.sum().backward()
    assert torch.isfinite(f.grad).all()


def test_affinity_at_is_a_row_of_the_affinity():
    f = torch.randn(2, 5, 8, 6)
    a = pairwise_affinity(f, pool=(4, 3))
    m = affinity_at(f, (2, 1), pool=(4, 3))
    assert m.shape == (2, 4, 3)
    assert torch.allclose(m, a[:, 2 * 3 + 1].reshape(2, 4, 3), atol=1e-6)
    with pytest.raises(ValueError, match=r"outside the 4 x 3 grid"):
        affinity_at(f, (4, 0), pool=(4, 3))


def test_joint_relations_and_losses_match_naive():
    hm = heatmaps(n=2, k=4)
    r = joint_relations(hm)
    assert r.shape == (2, 4, 4)
    assert torch.allclose(r, naive_relations(hm), atol=1e-12)
    r2 = joint_relations(heatmaps(n=2, k=4))
    assert relation_loss(r, r2).item() == pytest.approx(naive_structure_loss(r, r2), rel=1e-9)
    a1, a2 = pairwise_affinity(torch.randn(2, 3, 3, 2), None), pairwise_affinity(torch.randn(2, 5, 3, 2), None)
    assert affinity_loss(a1, a2).item() == pytest.approx(naive_structure_loss(a1, a2), rel=1e-5)


def test_structure_distillation_parts_zero_and_weights():
    fs, ft = torch.randn(2, 4, 8, 6), torch.randn(2, 16, 8, 6)
    s, t = heatmaps(), heatmaps()
    sd = StructureDistillation(pool="auto", affinity_weight=2.0, relation_weight=3.0)
    parts = sd(fs, ft, s, t)
    assert set(parts) == {"affinity", "relation"}
    a_expected = naive_structure_loss(pairwise_affinity(fs, None), pairwise_affinity(ft, None))
    assert parts["affinity"].item() == pytest.approx(2.0 * a_expected, rel=1e-5)
    assert parts["relation"].item() == pytest.approx(3.0 * naive_structure_loss(joint_relations(s), joint_relations(t)))
    zero = sd(ft * 2, ft, t, t)
    assert zero["affinity"].item() == pytest.approx(0.0, abs=1e-10)
    assert zero["relation"].item() == pytest.approx(0.0, abs=1e-12)
    assert set(sd(student_heatmaps=s, teacher_heatmaps=t)) == {"relation"}
    # different sizes: both pooled to the smaller grid
    assert sd.affinity_term(torch.randn(2, 4, 16, 12), ft).item() >= 0


def test_structure_gradients_reach_student_not_teacher():
    fs, ft = torch.randn(2, 4, 8, 6, requires_grad=True), torch.randn(2, 8, 8, 6, requires_grad=True)
    s, t = heatmaps(requires_grad=True), heatmaps(requires_grad=True)
    parts = StructureDistillation()(fs, ft, s, t)
    (parts["affinity"] + parts["relation"]).backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert ft.grad is None and t.grad is None


def test_structure_errors():
    sd = StructureDistillation()
    with pytest.raises(ValueError, match=r"\(2, 3, 6, 5\).*\(2, 4, 6, 5\)"):
        sd(student_heatmaps=heatmaps(), teacher_heatmaps=heatmaps(k=4))
    with pytest.raises(ValueError, match="batch sizes"):
        sd(torch.randn(2, 4, 8, 6), torch.randn(3, 4, 8, 6))
    with pytest.raises(ValueError, match="both"):
        sd(torch.randn(2, 4, 8, 6), None)


# ----------------------------------------------------------------------------- integral
def test_decay_schedule_values():
    assert decay_factor(0.3, "none") == 1.0
    assert decay_factor(0.0, "linear") == 1.0
    assert decay_factor(0.25, "linear") == pytest.approx(0.75)
    assert decay_factor(1.0, "linear") == 0.0
    assert decay_factor(0.0, "cosine") == pytest.approx(1.0)
    assert decay_factor(0.5, "cosine") == pytest.approx(0.5)
    assert decay_factor(1.0, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert decay_factor(0.25, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        decay_factor(1.5, "linear")
    with pytest.raises(ValueError, match="decay"):
        decay_factor(0.5, "step")


def make_taps(n=2, k=K, c_s=4, c_t=8, requires_grad=False):
    student = {"layer4": torch.randn(n, c_s, 4, 3, requires_grad=requires_grad),
               "heatmaps": torch.rand(n, k, 8, 6, requires_grad=requires_grad)}
    teacher = {"layer4": torch.randn(n, c_t, 4, 3, requires_grad=requires_grad),
               "heatmaps": torch.rand(n, k, 8, 6, requires_grad=requires_grad)}
    return student, teacher


SUBSETS = [list(c) for r in range(4) for c in itertools.combinations(["logit", "feature", "structure"], r)]
SUBSETS += [["affinity"], ["relation"], ["logit", "relation"]]


@pytest.mark.parametrize("terms", SUBSETS, ids=lambda t: "+".join(t) or "none")
def test_integral_keys_and_total(terms):
    kd = IntegralKD(terms=terms, student_channels=4, teacher_channels=8)
    s, t = make_taps()
    g, w = torch.rand(2, K, 8, 6), torch.ones(2, K)
    out = kd(s, t, g, w)
    expected = {"gt", "total"} | {x for x in terms if x != "structure"}
    if "structure" in terms:
        expected |= {"affinity", "relation"}
    assert set(out) == expected
    parts = sum(v for key, v in out.items() if key != "total")
    assert out["total"].item() == pytest.approx(parts.item(), rel=1e-6)
    # the parts are the terms' own values, weighted
    alpha = 0.5 if "logit" in terms else 0.0
    assert out["gt"].item() == pytest.approx((1 - alpha) * JointsMSELoss()(s["heatmaps"], g, w).item(), rel=1e-6)
    if "relation" in out:
        r = relation_loss(joint_relations(s["heatmaps"]), joint_relations(t["heatmaps"]))
        assert out["relation"].item() == pytest.approx(1e-2 * r.item(), rel=1e-5)
    assert "heatmaps" in kd.required_taps
    assert ("layer4" in kd.required_taps) == bool({"feature", "structure", "affinity"} & set(terms))
    if not terms:
        assert kd.required_teacher_taps == ()
        assert out["total"].item() == pytest.approx(JointsMSELoss()(s["heatmaps"], g, w).item(), rel=1e-6)
        kd(s, None, g, w)  # no teacher needed


def test_integral_zero_when_student_equals_teacher_equals_gt():
    kd = IntegralKD(student_channels=8, teacher_channels=8, use_bn=False)
    identity_adapter(kd.feature)
    _, t = make_taps()
    out = kd({k: v.clone() for k, v in t.items()}, t, t["heatmaps"].clone(), torch.ones(2, K))
    for key, value in out.items():
        assert value.item() == pytest.approx(0.0, abs=1e-10), key


def test_integral_decay_scales_distillation_terms():
    kd = IntegralKD(student_channels=4, teacher_channels=8, decay="linear")
    s, t = make_taps()
    g, w = torch.rand(2, K, 8, 6), torch.ones(2, K)
    start, mid, end = (kd(s, t, g, w, progress=p) for p in (0.0, 0.5, 1.0))
    gt = JointsMSELoss()(s["heatmaps"], g, w).item()
    assert start["gt"].item() == pytest.approx(0.5 * gt, rel=1e-6)
    assert mid["gt"].item() == pytest.approx(0.75 * gt, rel=1e-6)
    assert end["gt"].item() == pytest.approx(gt, rel=1e-6)
    for key in ("logit", "feature", "affinity", "relation"):
        assert mid[key].item() == pytest.approx(0.5 * start[key].item(), rel=1e-5), key
        assert end[key].item() == 0.0
    assert kd.current_weights(0.5) == pytest.approx(
        {"gt": 0.75, "logit": 0.25, "feature": 5e-4, "affinity": 5e-3, "relation": 5e-3})


def test_integral_errors_name_shapes_and_fix():
    kd = IntegralKD(student_channels=4, teacher_channels=8)
    s, t = make_taps()
    g, w = torch.rand(2, K, 8, 6), torch.ones(2, K)
    t_bad = dict(t, heatmaps=torch.rand(2, K + 1, 8, 6))
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 6\).*\(2, 4, 8, 6\).*num_joints"):
        kd(s, t_bad, g, w)
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 6\).*\(2, 3, 16, 12\).*input size"):
        kd(s, t, torch.rand(2, K, 16, 12), w)
    with pytest.raises(ValueError, match="4-D"):
        kd(s, dict(t, heatmaps=torch.rand(K, 8, 6)), g, w)
    with pytest.raises(ValueError, match="target_weight"):
        kd(s, t, g, torch.ones(2, K, 2))
    with pytest.raises(ValueError, match=r"teacher taps lack 'layer4'.*required_teacher_taps"):
        kd(s, {"heatmaps": t["heatmaps"]}, g, w)
    with pytest.raises(ValueError, match="for_models"):
        IntegralKD(terms=["feature"])
    with pytest.raises(ValueError, match="unknown distillation term"):
        IntegralKD(terms=["logits"])


def test_integral_with_real_models_gradients_never_reach_teacher():
    from ikd_edu.models import build_model

    student, teacher = build_model("quick-student"), build_model("quick-teacher")
    kd = IntegralKD.for_models(student, teacher)
    assert kd.feature.adapter[0].in_channels == student.tap_channels("layer4")
    assert kd.feature.adapter[0].out_channels == teacher.tap_channels("layer4")
    assert kd.required_taps == ("layer4", "heatmaps") == kd.required_teacher_taps
    x = torch.randn(2, 3, 128, 96)
    s = student.forward_taps(x, kd.required_taps)
    t = teacher.forward_taps(x, kd.required_teacher_taps)  # deliberately *with* grad: the losses must detach
    g = torch.rand_like(s["heatmaps"])
    out = kd(s, t, g, torch.ones(2, 17))
    out["total"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in kd.parameters())
    assert student.final_layer.weight.grad is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.layer4.parameters())
