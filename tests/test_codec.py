"""Tests for ikd_edu.codec.

Expected values come from straightforward per-joint numpy loops written here from the
SimpleBaseline / DARK reference definitions (never from the code under test).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ikd_edu.codec import (
    decode_heatmaps,
    decode_to_image,
    encode_heatmaps,
    flip_back,
    flip_test_average,
)
from ikd_edu.geometry import heatmap_to_image
from ikd_edu.skeleton import COCO, MPII

H, W = 64, 48
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --------------------------------------------------------------------------- loop references


def loop_encode(joints, vis, size, sigma, unbiased=False):
    """The reference generate_target, one joint at a time (patch pasted into the map)."""
    h, w = size
    n, k = vis.shape
    target = np.zeros((n, k, h, w), np.float64)
    weight = np.zeros((n, k), np.float64)
    tmp_size = sigma * 3
    for i in range(n):
        for j in range(k):
            weight[i, j] = 1.0 if vis[i, j] > 0 else 0.0
            mu_x = int(joints[i, j, 0] + 0.5)
            mu_y = int(joints[i, j, 1] + 0.5)
            ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
            br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
            if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
                weight[i, j] = 0
                continue
            if weight[i, j] <= 0.5:
                continue
            # the Gaussian over the window pixels, then the part on the map is pasted
            cx, cy = (joints[i, j, 0], joints[i, j, 1]) if unbiased else (mu_x, mu_y)
            xs = np.arange(ul[0], br[0])
            ys = np.arange(ul[1], br[1])
            g = np.exp(-((xs[None, :] - cx) ** 2 + (ys[:, None] - cy) ** 2) / (2 * sigma**2))
            g_x = max(0, -ul[0]), min(br[0], w) - ul[0]
            g_y = max(0, -ul[1]), min(br[1], h) - ul[1]
            img_x = max(0, ul[0]), min(br[0], w)
            img_y = max(0, ul[1]), min(br[1], h)
            target[i, j, img_y[0]:img_y[1], img_x[0]:img_x[1]] = g[g_y[0]:g_y[1], g_x[0]:g_x[1]]
    return target, weight


def loop_decode(hms, method):
    """The reference get_max_preds + quarter shift / DARK taylor, one map at a time."""
    n, k, h, w = hms.shape
    coords = np.zeros((n, k, 2))
    maxvals = np.zeros((n, k))
    for i in range(n):
        for j in range(k):
            hm = hms[i, j]
            idx = int(np.argmax(hm.reshape(-1)))
            maxvals[i, j] = hm.reshape(-1)[idx]
            if maxvals[i, j] > 0:
                coords[i, j] = idx % w, idx // w
            px, py = int(math.floor(coords[i, j, 0] + 0.5)), int(math.floor(coords[i, j, 1] + 0.5))
            if method == "quarter" and 1 < px < w - 1 and 1 < py < h - 1:
                diff = np.array([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]])
                coords[i, j] += np.sign(diff) * 0.25
            if method == "dark":
                lg = np.log(np.maximum(loop_blur(hm, 11), 1e-10))
                px, py = int(coords[i, j, 0]), int(coords[i, j, 1])
                if 1 < px < w - 2 and 1 < py < h - 2:
                    dx = 0.5 * (lg[py][px + 1] - lg[py][px - 1])
                    dy = 0.5 * (lg[py + 1][px] - lg[py - 1][px])
                    dxx = 0.25 * (lg[py][px + 2] - 2 * lg[py][px] + lg[py][px - 2])
                    dxy = 0.25 * (lg[py + 1][px + 1] - lg[py - 1][px + 1] - lg[py + 1][px - 1] + lg[py - 1][px - 1])
                    dyy = 0.25 * (lg[py + 2][px] - 2 * lg[py][px] + lg[py - 2][px])
                    if dxx * dyy - dxy**2 != 0:
                        hess = np.array([[dxx, dxy], [dxy, dyy]])
                        coords[i, j] += -np.linalg.inv(hess) @ np.array([dx, dy])
    return coords, maxvals


def loop_blur(hm, kernel):
    """cv2.GaussianBlur(zero-padded map, (kernel, kernel), 0), rescaled to the original max."""
    s = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    t = np.arange(kernel) - (kernel - 1) / 2
    g = np.exp(-(t**2) / (2 * s * s))
    g /= g.sum()
    b = (kernel - 1) // 2
    h, w = hm.shape
    padded = np.zeros((h + 2 * b, w + 2 * b))
    padded[b:-b, b:-b] = hm
    out = np.zeros((h, w))
    for dy in range(kernel):  # correlation with the kernel g g^T, one tap at a time
        for dx in range(kernel):
            out += g[dy] * g[dx] * padded[dy:dy + h, dx:dx + w]
    return out * (hm.max() / out.max())


def loop_flip_back(hms, flip_pairs):
    out = hms[:, :, :, ::-1].copy()
    for a, b in flip_pairs:
        tmp = out[:, a].copy()
        out[:, a] = out[:, b]
        out[:, b] = tmp
    return out


def random_keypoints(rng, n, k, lo=(0.0, 0.0), hi=(W - 1.0, H - 1.0)):
    x = rng.uniform(lo[0], hi[0], size=(n, k))
    y = rng.uniform(lo[1], hi[1], size=(n, k))
    return np.stack([x, y], -1).astype(np.float32)


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("sigma", [2.0, 3.0])
@pytest.mark.parametrize("unbiased", [False, True])
def test_encode_matches_reference_loop(sigma, unbiased):
    rng = np.random.default_rng(int(sigma) + 10 * unbiased)
    # random points on and well off the map, plus hand-picked border cases (sigma 2 notes)
    kp = random_keypoints(rng, 5, 17, lo=(-12, -12), hi=(W + 12, H + 12))
    kp[0, :8] = [[-0.7, 10], [-7.6, 10], [-8.6, 10], [53.4, 10], [53.6, 10], [10, -8.6], [10, 69.6], [10, 69.4]]
    vis = rng.integers(0, 3, size=(5, 17))
    vis[0, :8] = 2
    hm, tw = encode_heatmaps(torch.from_numpy(kp), torch.from_numpy(vis), (H, W), sigma=sigma, unbiased=unbiased)
    ref_hm, ref_tw = loop_encode(kp.astype(np.float64), vis, (H, W), sigma, unbiased)
    assert hm.shape == (5, 17, H, W) and tw.shape == (5, 17)
    assert hm.dtype == torch.float32 and tw.dtype == torch.float32
    np.testing.assert_array_equal(tw.numpy(), ref_tw)
    np.testing.assert_allclose(hm.numpy(), ref_hm, atol=1e-4)
    # the cases exercised: invisible joints, off-map (weight 0), and kept ones
    assert (vis == 0).any() and ((vis > 0) & (ref_tw == 0)).any() and ref_tw.sum() > 20
    if sigma == 2.0:  # -7.6 passes the ul/br test with an empty window; -8.6 and 53.6 do not
        np.testing.assert_array_equal(ref_tw[0, :8], [1, 1, 0, 1, 0, 0, 0, 1])
        assert hm[0, 1].abs().max() == 0


def test_encode_peak_is_one_and_unbiased_peak_is_subpixel():
    kp = torch.tensor([[[20.3, 30.8]]])
    ref, _ = encode_heatmaps(kp, torch.ones(1, 1), (H, W))
    unb, _ = encode_heatmaps(kp, torch.ones(1, 1), (H, W), unbiased=True)
    assert ref[0, 0, 31, 20] == 1.0 and ref.max() == 1.0
    # the unbiased map at the nearest pixel is exp(-(0.3^2 + 0.2^2) / 8) < 1
    assert unb[0, 0, 31, 20].item() == pytest.approx(math.exp(-(0.3**2 + 0.2**2) / 8), abs=1e-6)


# --------------------------------------------------------------------------- decoding


def _decode_inputs(rng):
    hms = rng.normal(size=(4, 17, H, W)).astype(np.float32)
    hms[0, 0] = -np.abs(hms[0, 0]) - 0.1  # maxval <= 0 -> coords masked to 0
    # peaks placed at and next to the borders of the quarter/DARK conditions
    for j, (x, y) in enumerate([(1, 1), (2, 2), (0, 30), (47, 30), (46, 30), (45, 61), (20, 62), (10, 63)]):
        hms[1, j, y, x] = 10.0
    hms[2, 0, 10, [5, 30]] = hms[2, 0, 40, 7] = 10.0  # ties: the first in row-major order wins
    return hms


@pytest.mark.parametrize("method", ["argmax", "quarter"])
def test_decode_matches_reference_loop(method):
    hms = _decode_inputs(np.random.default_rng(1))
    coords, maxvals = decode_heatmaps(torch.from_numpy(hms), method)
    ref_coords, ref_max = loop_decode(hms.astype(np.float64), method)
    assert coords.shape == (4, 17, 2) and maxvals.shape == (4, 17) and coords.dtype == torch.float32
    np.testing.assert_allclose(coords.numpy(), ref_coords, atol=1e-4)
    np.testing.assert_allclose(maxvals.numpy(), ref_max, atol=1e-4)
    assert (coords[0, 0] == 0).all()
    if method == "quarter":  # shifts happened somewhere, and not at the excluded borders
        assert (np.abs(ref_coords - np.round(ref_coords)) == 0.25).any()
        np.testing.assert_array_equal(coords[1, 0].numpy(), [1, 1])


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_large_batch_threads_match_reference_loop(threads, dtype):
    # 24 x 17 maps of 64 x 48 = 1.25 M values: above the size where CPU decoding splits the
    # argmax over threads; the result must not depend on the thread count
    rng = np.random.default_rng(5)
    hms = np.concatenate([_decode_inputs(rng), rng.normal(size=(20, 17, H, W))]).astype(dtype)
    hms[23, 16] = 0.0  # an all-zero map: argmax 0, maxval 0, masked
    hms[22, 3, 5, 9] = hms[22, 3, 5, 8] = 50.0  # a tie inside the quarter region
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        coords, maxvals = decode_heatmaps(torch.from_numpy(hms), "quarter")
    finally:
        torch.set_num_threads(before)
    ref_coords, ref_max = loop_decode(hms.astype(np.float64), "quarter")
    assert coords.dtype == (torch.float64 if dtype == np.float64 else torch.float32)
    np.testing.assert_array_equal(coords.numpy(), ref_coords)  # multiples of 1/4: exact
    np.testing.assert_allclose(maxvals.numpy(), ref_max, atol=1e-6)
    assert coords[22, 3, 0] == 8.25  # the first of the tie (x = 8) wins, shifted towards its equal right neighbour


def _large_maps(seed, n=24):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 17, H, W)).astype(np.float32))


@pytest.mark.parametrize("share", [0.0, 0.05, 0.5, 0.9, 1.0])
def test_decode_large_batch_any_row_split_gives_the_same_result(share):
    # the calling thread's share of the rows is learned at run time; whatever it is (even the
    # extremes, clamped so that every thread gets a row), the result must be the loop's
    from ikd_edu import codec_fast as codec

    hms = _large_maps(7)
    before, saved = torch.get_num_threads(), dict(codec._CALLER_SHARE)
    torch.set_num_threads(2)
    try:
        codec._CALLER_SHARE[2] = share
        coords, maxvals = decode_heatmaps(hms, "quarter")
        assert 0.25 <= codec._CALLER_SHARE[2] <= 0.9  # one update, kept within its bounds
    finally:
        torch.set_num_threads(before)
        codec._CALLER_SHARE.clear()
        codec._CALLER_SHARE.update(saved)
    ref_coords, ref_max = loop_decode(hms.numpy().astype(np.float64), "quarter")
    np.testing.assert_array_equal(coords.numpy(), ref_coords)
    np.testing.assert_allclose(maxvals.numpy(), ref_max, atol=1e-6)


def test_decode_from_several_python_threads_at_once():
    # one split argmax at a time owns the worker threads; a concurrent caller decodes on its
    # own thread instead of waiting or mixing jobs up (daemon threads: a hang fails, not blocks)
    import threading

    batches = [_large_maps(10 + i) for i in range(4)]
    expected = [loop_decode(b.numpy().astype(np.float64), "quarter")[0] for b in batches]
    results: dict[int, list] = {}

    def decode_five(i):
        results[i] = [decode_heatmaps(batches[i], "quarter")[0] for _ in range(5)]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        threads = [threading.Thread(target=decode_five, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "concurrent decoding hung"
    finally:
        torch.set_num_threads(before)
    for i, want in enumerate(expected):
        for coords in results[i]:
            np.testing.assert_array_equal(coords.numpy(), want)


def test_decode_after_an_interrupted_decode(monkeypatch):
    # Ctrl-C (KeyboardInterrupt) while the caller waits for a worker: the next decode must not
    # hand a job to a worker that may still be busy (it would hang or mix results up)
    import threading

    from ikd_edu import codec_fast as codec

    hms = _large_maps(9)
    expected = loop_decode(hms.numpy().astype(np.float64), "quarter")[0]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        decode_heatmaps(hms, "quarter")  # workers exist
        real_wait = codec._ArgmaxWorker.wait

        def interrupted(self):  # interrupted before the worker is done (or waited for)
            raise KeyboardInterrupt

        monkeypatch.setattr(codec._ArgmaxWorker, "wait", interrupted)
        busy = list(codec._WORKERS)
        with pytest.raises(KeyboardInterrupt):
            decode_heatmaps(hms, "quarter")
        assert not set(map(id, codec._WORKERS)) & set(map(id, busy)), "a possibly busy worker is kept"
        monkeypatch.setattr(codec._ArgmaxWorker, "wait", real_wait)
        results = []
        t = threading.Thread(target=lambda: results.extend(decode_heatmaps(hms, "quarter")[0] for _ in range(5)),
                             daemon=True)
        t.start()
        t.join(timeout=60)
        assert not t.is_alive(), "decoding after an interrupted decode hung"
    finally:
        torch.set_num_threads(before)
    assert len(results) == 5
    for coords in results:
        np.testing.assert_array_equal(coords.numpy(), expected)


def test_argmax_worker_hands_errors_back_and_keeps_working():
    from ikd_edu.codec_fast import _ArgmaxWorker

    worker = _ArgmaxWorker()
    rows = np.random.default_rng(8).normal(size=(6, 20))
    worker.start(rows, np.empty(5, np.int64))  # wrong output length
    with pytest.raises(ValueError):
        worker.wait()
    out = np.empty(6, np.int64)
    worker.start(rows, out)
    worker.wait()
    assert (out == rows.argmax(-1)).all()


def _decode_in_child(queue):
    hms = torch.from_numpy(np.random.default_rng(6).normal(size=(24, 17, H, W)).astype(np.float32))
    queue.put(decode_heatmaps(hms, "quarter")[0].sum().item())


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork start method is POSIX-only")
def test_decode_worker_threads_survive_fork():
    # a DataLoader worker is a fork of a process whose decoding worker threads already ran: the
    # child has the worker objects but not their threads, and must not wait on them forever
    import multiprocessing as mp

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        hms = torch.from_numpy(np.random.default_rng(6).normal(size=(24, 17, H, W)).astype(np.float32))
        expected = decode_heatmaps(hms, "quarter")[0].sum().item()  # the workers now exist here
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_decode_in_child, args=(queue,))
        child.start()
        child.join(timeout=60)
        alive = child.is_alive()
        if alive:
            child.kill()
        assert not alive, "decoding in a forked child hung (worker threads inherited across fork)"
        assert child.exitcode == 0 and queue.get(timeout=5) == expected
    finally:
        torch.set_num_threads(before)


def test_decode_dark_matches_reference_loop():
    rng = np.random.default_rng(2)
    kp = random_keypoints(rng, 2, 5, lo=(-2, -2), hi=(W + 1, H + 1))
    hm, _ = encode_heatmaps(torch.from_numpy(kp), torch.ones(2, 5), (H, W), unbiased=True, dtype=torch.float64)
    hm = hm + 0.02 * torch.from_numpy(rng.random((2, 5, H, W)))
    coords, maxvals = decode_heatmaps(hm, "dark", dark_kernel=11)
    ref_coords, ref_max = loop_decode(hm.numpy(), "dark")
    assert coords.dtype == torch.float64
    np.testing.assert_allclose(coords.numpy(), ref_coords, atol=1e-4)
    np.testing.assert_allclose(maxvals.numpy(), ref_max, atol=1e-6)


# --------------------------------------------------------------------------- flip test


@pytest.mark.parametrize("skeleton", [COCO, MPII])
def test_flip_back_and_average_match_reference_loop(skeleton):
    rng = np.random.default_rng(3)
    k = skeleton.num_joints
    a = rng.normal(size=(3, k, H, W)).astype(np.float32)
    b = rng.normal(size=(3, k, H, W)).astype(np.float32)
    ref_back = loop_flip_back(b, skeleton.flip_pairs)
    np.testing.assert_allclose(flip_back(torch.from_numpy(b), skeleton.flip_index).numpy(), ref_back, atol=1e-6)
    shifted = ref_back.copy()
    shifted[:, :, :, 1:] = ref_back[:, :, :, :-1]
    out = flip_test_average(torch.from_numpy(a), torch.from_numpy(b), skeleton.flip_index)
    np.testing.assert_allclose(out.numpy(), (a + shifted) / 2, atol=1e-6)
    out = flip_test_average(torch.from_numpy(a), torch.from_numpy(b), skeleton.flip_index, shift=False)
    np.testing.assert_allclose(out.numpy(), (a + ref_back) / 2, atol=1e-6)


# --------------------------------------------------------------------------- round trips


def _round_trip_error(unbiased, method, n=32):
    rng = np.random.default_rng(4)
    r = 6  # window radius 3 sigma: keep the whole Gaussian on the map
    kp = random_keypoints(rng, n, 17, lo=(r, r), hi=(W - 1 - r, H - 1 - r))
    hm, tw = encode_heatmaps(torch.from_numpy(kp), torch.ones(n, 17), (H, W), sigma=2.0, unbiased=unbiased)
    assert tw.min() == 1
    coords, _ = decode_heatmaps(hm, method, sigma=2.0)
    err = (coords.double() - torch.from_numpy(kp).double()).abs()  # (N, K, 2)
    return err.mean().item(), err.norm(dim=-1).mean().item()


def test_round_trip_reference_quarter():
    # The map is centred on the rounded point, so both neighbours are equal and the quarter
    # shift is 0: the error is the rounding error, per axis uniform on [-0.5, 0.5]
    # (mean |e| = 0.25 per coordinate; as a 2-D distance about 0.38).
    per_axis, dist = _round_trip_error(False, "quarter")
    assert per_axis <= 0.3, f"reference encode + quarter decode: mean per-coordinate error {per_axis:.4f} px > 0.3"
    assert dist <= 0.45, f"reference encode + quarter decode: mean distance {dist:.4f} px > 0.45"


def test_round_trip_unbiased_dark():
    per_axis, dist = _round_trip_error(True, "dark")
    assert dist <= 0.05, f"unbiased encode + DARK decode: mean distance {dist:.4f} px > 0.05"
    assert per_axis <= 0.05, f"unbiased encode + DARK decode: mean per-coordinate error {per_axis:.4f} px > 0.05"


def test_crop_pixels_and_image_mapping():
    # crop pixels in and out through the stride (256x192 -> 64x48: 4), and the image mapping
    rng = np.random.default_rng(5)
    crop_kp = torch.from_numpy(random_keypoints(rng, 3, 17, lo=(30, 30), hi=(160, 225)))
    hm, _ = encode_heatmaps(crop_kp / 4, torch.ones(3, 17), (64, 48), unbiased=True)
    decoded, _ = decode_heatmaps(hm, "dark")
    assert (decoded * 4 - crop_kp).abs().max() < 0.1  # crop pixels, stride 4
    center, scale = torch.tensor([[100.0, 120.0]] * 3), torch.tensor([[1.2, 1.6]] * 3)
    img, _ = decode_to_image(hm, center, scale, method="dark")
    expected = heatmap_to_image(decode_heatmaps(hm, "dark")[0], center, scale, (64, 48))
    torch.testing.assert_close(img, expected)
    # and the reference encode rounds crop / stride exactly like int(u / 4 + 0.5)
    ref_hm, _ = encode_heatmaps(torch.tensor([[[41.9, 10.0]]], dtype=torch.float64) / 4, torch.ones(1, 1), (64, 48))
    assert ref_hm[0, 0, 3, 10] == 1.0  # 41.9 / 4 = 10.475 -> 10, 10 / 4 = 2.5 -> 3


# --------------------------------------------------------------------------- grads, devices, dtypes, errors


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_devices_dtypes(device):
    kp = torch.tensor([[[20.3, 30.6], [10.2, 12.7]]], device=device, requires_grad=True)
    vis = torch.ones(1, 2, device=device)
    hm, tw = encode_heatmaps(kp, vis, (H, W), unbiased=True)
    assert hm.device.type == device and hm.dtype == torch.float32 and tw.dtype == torch.float32
    hm[0, 0, 30, 21].backward()  # pixel right of / below the centre: pulls the centre there
    assert kp.grad[0, 0, 0] > 0 and kp.grad[0, 0, 1] < 0 and (kp.grad[0, 1] == 0).all()

    ref, _ = encode_heatmaps(kp, vis, (H, W))
    assert not ref.requires_grad  # the reference centre is rounded: piecewise constant

    hm64, tw64 = encode_heatmaps(kp.detach().cpu(), vis.cpu(), (H, W), dtype=torch.float64, device=device)
    assert hm64.dtype == torch.float64 and tw64.dtype == torch.float64 and hm64.device.type == device
    half, _ = encode_heatmaps(kp.detach(), vis, (H, W), dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16

    heat = hm.detach().clone().requires_grad_(True)
    coords, maxvals = decode_heatmaps(heat, "dark")
    assert coords.device.type == device and coords.requires_grad
    (coords.sum() + maxvals.sum()).backward()
    assert heat.grad.abs().sum() > 0 and torch.isfinite(heat.grad).all()
    heat.grad = None
    coords, maxvals = decode_heatmaps(heat, "quarter")
    assert not coords.requires_grad and maxvals.requires_grad
    maxvals.sum().backward()
    assert heat.grad.sum() == 2  # one-hot at each argmax
    c16, m16 = decode_heatmaps(hm.detach().to(torch.bfloat16), "quarter")
    assert c16.dtype == torch.float32 and m16.dtype == torch.float32
    assert flip_back(heat, [1, 0]).requires_grad


def test_bad_inputs_raise_clear_errors():
    kp, vis = torch.zeros(2, 17, 2), torch.ones(2, 17)
    with pytest.raises(ValueError, match=r"keypoints must have shape \(N, K, 2\).*keypoints\[\.\.\., :2\]"):
        encode_heatmaps(torch.zeros(2, 17, 3), vis)
    with pytest.raises(ValueError, match=r"visible must have shape \(N, K\) = \(2, 17\)"):
        encode_heatmaps(kp, torch.ones(2, 16))
    with pytest.raises(ValueError, match="heatmap_size must be"):
        encode_heatmaps(kp, vis, heatmap_size=(64,))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        encode_heatmaps(kp, vis, sigma=0)
    with pytest.raises(ValueError, match=r"heatmaps must have shape \(N, K, h, w\).*heatmaps\[None\]"):
        decode_heatmaps(torch.zeros(17, H, W))
    with pytest.raises(ValueError, match="method must be one of"):
        decode_heatmaps(torch.zeros(1, 17, H, W), "soft-argmax")
    with pytest.raises(ValueError, match="dark_kernel must be an odd"):
        decode_heatmaps(torch.zeros(1, 17, H, W), "dark", dark_kernel=10)
    with pytest.raises(ValueError, match="flip_index must be a permutation.*COCO.flip_index"):
        flip_back(torch.zeros(1, 17, H, W), MPII.flip_index)
    with pytest.raises(ValueError, match="same shape"):
        flip_test_average(torch.zeros(1, 17, H, W), torch.zeros(1, 17, H, W - 1), COCO.flip_index)
    with pytest.raises(ValueError, match=r"center and scale must have shape \(N, 2\) with N = 2"):
        decode_to_image(torch.zeros(2, 17, H, W), torch.zeros(3, 2), torch.ones(3, 2))
