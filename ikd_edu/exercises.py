"""Checks for the course notebooks' exercises: compare the learner's function with the library's.

Each ``check_*`` runs the learner's function on random inputs, raises ``AssertionError`` with a
message that says *what* is wrong, and never prints the expected values. So far: ``check_encode``
(notebook 01).
"""
from __future__ import annotations

import torch


def check_encode(fn) -> None:
    """Compare ``fn(keypoints, visible, size, sigma)`` with ``ikd_edu.codec.encode_heatmaps`` (reference).

    Raises AssertionError saying what differs; never prints the expected values.
    """
    from ikd_edu.codec import encode_heatmaps

    gen = torch.Generator().manual_seed(1234)
    cases = [((32, 24), 2.0), ((64, 48), 2.0), ((17, 13), 1.5), ((32, 24), 3.0)]
    for (h, w), sigma in cases:
        n, k = 3, 17
        kp = torch.rand(n, k, 2, generator=gen) * torch.tensor([w + 16.0, h + 16.0]) - 8
        vis = torch.randint(0, 3, (n, k), generator=gen)
        out = fn(kp.clone(), vis.clone(), (h, w), sigma)
        assert isinstance(out, tuple) and len(out) == 2, "encode must return a tuple (heatmaps, target_weight)"
        hm, weight = (torch.as_tensor(t) for t in out)
        ref_hm, ref_w = encode_heatmaps(kp, vis, (h, w), sigma)
        assert tuple(hm.shape) == (n, k, h, w), (
            f"heatmaps have shape {tuple(hm.shape)} for N={n}, K={k}, size=(h, w)=({h}, {w}); expected (N, K, h, w)")
        assert tuple(weight.shape) == (n, k), f"target_weight has shape {tuple(weight.shape)}; expected (N, K) = ({n}, {k})"
        bad_w = (weight.float() != ref_w)
        if bad_w.any():
            raise AssertionError(
                f"target_weight is wrong for {int(bad_w.sum())} of {n * k} joints (size {h}x{w}, sigma {sigma}): "
                "a joint counts when visible > 0 and its window [ul, br) touches the map")
        diff = (hm.float() - ref_hm).abs()
        if diff.max() > 1e-5:
            zero = ref_w == 0
            if (hm.float()[zero] != 0).any():
                raise AssertionError("joints with target_weight 0 must have all-zero heatmaps")
            raise AssertionError(
                f"heatmaps differ (size {h}x{w}, sigma {sigma}) on {int((diff > 1e-5).sum())} pixels: check the rounded "
                "centre int(x + 0.5), the 3-sigma window [ul, br) and exp(-d^2 / (2 sigma^2))")
    print("check_encode: all cases pass")
