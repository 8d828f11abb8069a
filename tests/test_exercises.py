"""Exercise checks: the library's own function passes; each typical mistake fails with a message naming it.

Every wrong version below is a deliberate, realistic learner mistake; the test asserts that the
check's message names *that* mistake (and never leaks tensors/expected values).
"""
from __future__ import annotations

import time

import pytest
import torch
from torch.nn import functional as F

from ikd_edu import exercises
from ikd_edu.codec import encode_heatmaps


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
def test_encode_library_passes_quickly(capsys):
    t0 = time.perf_counter()
    exercises.check_encode(encode_heatmaps)
    assert time.perf_counter() - t0 < 5
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
