"""Exercise checks: the library's own function passes; typical mistakes fail with a message naming them."""
from __future__ import annotations

import pytest
import torch

from ikd_edu.codec import encode_heatmaps
from ikd_edu.exercises import check_encode


def test_check_encode_accepts_the_library_encoder(capsys):
    check_encode(encode_heatmaps)
    assert "pass" in capsys.readouterr().out


def test_check_encode_names_a_wrong_weight():
    def all_ones(kp, vis, size, sigma):
        hm, w = encode_heatmaps(kp, vis, size, sigma)
        return hm, torch.ones_like(w)

    with pytest.raises(AssertionError, match="target_weight is wrong"):
        check_encode(all_ones)


def test_check_encode_names_the_shape():
    with pytest.raises(AssertionError, match=r"expected \(N, K, h, w\)"):
        check_encode(lambda kp, vis, size, sigma: (encode_heatmaps(kp, vis, size, sigma)[0][0], torch.ones(3, 17)))


def test_check_encode_catches_an_unrounded_centre_without_printing_values():
    def unbiased(kp, vis, size, sigma):
        return encode_heatmaps(kp, vis, size, sigma, unbiased=True)

    with pytest.raises(AssertionError, match="rounded centre") as info:
        check_encode(unbiased)
    assert "tensor(" not in str(info.value)
