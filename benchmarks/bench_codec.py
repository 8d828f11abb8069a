"""Codec speed: vectorised torch (ikd_edu.codec) vs a per-joint Python loop of the same conventions.

Usage: python benchmarks/bench_codec.py [--batch 64] [--joints 17] [--size 64x48] [--repeats 50]

Times encode (reference and unbiased), decode (quarter and DARK) for a batch of N x K maps
and prints a table: best-of-`repeats` milliseconds per call of the per-joint loop and of the
vectorised code with 1 torch thread and with torch's default thread count (all cores), and
the speed-ups. The loop versions below handle one joint at a time in NumPy (the reference
code's generate_target / DARK shape); "vs reference" is the reference get_final_preds, whose
argmax is already batched. Both sides are checked to agree before they are timed.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from ikd_edu.codec import decode_heatmaps, default_dark_kernel, encode_heatmaps
from ikd_edu.validate import parse_size

# --------------------------------------------------------------------------- loop versions


def loop_encode(joints: np.ndarray, vis: np.ndarray, size, sigma: float, unbiased: bool = False):
    """Reference generate_target, one joint at a time: ``(N, K, 2)`` -> heatmaps, weights."""
    h, w = size
    n, k = vis.shape
    target = np.zeros((n, k, h, w), np.float32)
    weight = (vis > 0).astype(np.float32)
    tmp_size = sigma * 3
    for i in range(n):
        for j in range(k):
            mu_x, mu_y = int(joints[i, j, 0] + 0.5), int(joints[i, j, 1] + 0.5)
            ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
            br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
            if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
                weight[i, j] = 0
                continue
            if weight[i, j] <= 0.5:
                continue
            cx, cy = (joints[i, j, 0], joints[i, j, 1]) if unbiased else (mu_x, mu_y)
            xs, ys = np.arange(ul[0], br[0]), np.arange(ul[1], br[1])
            g = np.exp(-((xs[None, :] - cx) ** 2 + (ys[:, None] - cy) ** 2) / (2 * sigma**2))
            g_x = max(0, -ul[0]), min(br[0], w) - ul[0]
            g_y = max(0, -ul[1]), min(br[1], h) - ul[1]
            img_x = max(0, ul[0]), min(br[0], w)
            img_y = max(0, ul[1]), min(br[1], h)
            target[i, j, img_y[0]:img_y[1], img_x[0]:img_x[1]] = g[g_y[0]:g_y[1], g_x[0]:g_x[1]]
    return target, weight


def _max_preds(hms: np.ndarray):
    n, k, h, w = hms.shape
    flat = hms.reshape(n, k, -1)
    idx = flat.argmax(-1)
    maxvals = flat.max(-1)
    coords = np.stack([idx % w, idx // w], -1).astype(np.float32) * (maxvals > 0)[..., None]
    return coords, maxvals


def loop_decode_quarter(hms: np.ndarray):
    """Quarter-offset decoding, one joint at a time: argmax, mask, then the 0.25 px shift."""
    n, k, h, w = hms.shape
    coords = np.zeros((n, k, 2), np.float32)
    maxvals = np.zeros((n, k), np.float32)
    for i in range(n):
        for j in range(k):
            hm = hms[i, j]
            idx = int(hm.argmax())
            maxvals[i, j] = hm.flat[idx]
            if maxvals[i, j] <= 0:
                continue
            px, py = idx % w, idx // w
            coords[i, j] = px, py
            if 1 < px < w - 1 and 1 < py < h - 1:
                diff = np.array([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]])
                coords[i, j] += np.sign(diff) * 0.25
    return coords, maxvals


def reference_decode_quarter(hms: np.ndarray):
    """The reference get_final_preds: argmax batched in NumPy, only the quarter shift per joint."""
    n, k, h, w = hms.shape
    coords, maxvals = _max_preds(hms)
    for i in range(n):
        for j in range(k):
            hm = hms[i, j]
            px, py = int(math.floor(coords[i, j, 0] + 0.5)), int(math.floor(coords[i, j, 1] + 0.5))
            if 1 < px < w - 1 and 1 < py < h - 1:
                diff = np.array([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]])
                coords[i, j] += np.sign(diff) * 0.25
    return coords, maxvals


def _blur_one(hm: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Zero-padded separable Gaussian blur of one map (what cv2.GaussianBlur does there)."""
    b = (len(g) - 1) // 2
    padded = np.pad(hm, b)
    rows = np.apply_along_axis(lambda r: np.convolve(r, g, mode="valid"), 1, padded)
    out = np.apply_along_axis(lambda c: np.convolve(c, g, mode="valid"), 0, rows)
    return out * (hm.max() / out.max())


def loop_decode_dark(hms: np.ndarray, kernel: int):
    """DARK get_final_preds: blur + log per map, Taylor (Newton) step per joint."""
    n, k, h, w = hms.shape
    coords, maxvals = _max_preds(hms)
    s = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    t = np.arange(kernel) - (kernel - 1) / 2
    g = np.exp(-(t**2) / (2 * s * s))
    g /= g.sum()
    for i in range(n):
        for j in range(k):
            lg = np.log(np.maximum(_blur_one(hms[i, j], g), 1e-10))
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


# --------------------------------------------------------------------------- timing


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="instances N")
    parser.add_argument("--joints", type=int, default=17, help="joints K")
    parser.add_argument("--size", default="64x48", help="heatmap HxW")
    parser.add_argument("--sigma", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per cell (best is reported)")
    args = parser.parse_args(argv)
    all_threads = torch.get_num_threads()
    h, w = parse_size(args.size, "--size")
    n, k = args.batch, args.joints
    print(f"torch {torch.__version__}, default {all_threads} intra-op threads, "
          f"{len(os.sched_getaffinity(0))} CPUs; batch {n} x {k} maps at {h}x{w}, sigma {args.sigma}, "
          f"best of {args.repeats}")

    rng = np.random.default_rng(0)
    kp = np.stack([rng.uniform(-4, w + 3, (n, k)), rng.uniform(-4, h + 3, (n, k))], -1).astype(np.float32)
    vis = rng.integers(0, 3, (n, k))
    kp_t, vis_t = torch.from_numpy(kp), torch.from_numpy(vis)
    kernel = default_dark_kernel(args.sigma)

    hm_ref, _ = encode_heatmaps(kp_t, vis_t, (h, w), args.sigma)
    hm_unb, _ = encode_heatmaps(kp_t, vis_t, (h, w), args.sigma, unbiased=True)
    # network-like maps to decode: the targets plus a little noise
    noisy = hm_unb + 0.01 * torch.from_numpy(rng.random((n, k, h, w)).astype(np.float32))
    noisy_np = noisy.numpy()

    # the two sides agree before they are timed
    assert np.allclose(loop_encode(kp, vis, (h, w), args.sigma)[0], hm_ref.numpy(), atol=1e-4)
    assert np.allclose(loop_encode(kp, vis, (h, w), args.sigma, True)[0], hm_unb.numpy(), atol=1e-4)
    assert np.allclose(loop_decode_quarter(noisy_np)[0], decode_heatmaps(noisy, "quarter")[0].numpy(), atol=1e-4)
    assert np.allclose(reference_decode_quarter(noisy_np)[0], decode_heatmaps(noisy, "quarter")[0].numpy(), atol=1e-4)
    assert np.allclose(loop_decode_dark(noisy_np.astype(np.float64), kernel)[0],
                       decode_heatmaps(noisy.double(), "dark", kernel)[0].numpy(), atol=1e-4)

    rows = [
        ("encode reference", lambda: loop_encode(kp, vis, (h, w), args.sigma),
         lambda: encode_heatmaps(kp_t, vis_t, (h, w), args.sigma)),
        ("encode unbiased", lambda: loop_encode(kp, vis, (h, w), args.sigma, True),
         lambda: encode_heatmaps(kp_t, vis_t, (h, w), args.sigma, unbiased=True)),
        ("decode quarter", lambda: loop_decode_quarter(noisy_np), lambda: decode_heatmaps(noisy, "quarter")),
        ("  vs reference", lambda: reference_decode_quarter(noisy_np), lambda: decode_heatmaps(noisy, "quarter")),
        ("decode dark", lambda: loop_decode_dark(noisy_np, kernel), lambda: decode_heatmaps(noisy, "dark", kernel)),
    ]
    print(f"\n| {'step':<17} | {'loop ms':>8} | {'vec ms, 1 thread':>16} | {'speed-up':>8} | "
          f"{f'vec ms, {all_threads} threads':>17} | {'speed-up':>8} |")
    print(f"|{'-' * 19}|{'-' * 10}|{'-' * 18}|{'-' * 10}|{'-' * 19}|{'-' * 10}|")
    with torch.inference_mode():  # one untimed pass first: the first row timed must not pay the allocator's warm-up
        for _, loop_fn, vec_fn in rows:
            loop_fn(), vec_fn()
    for name, loop_fn, vec_fn in rows:
        with torch.inference_mode():
            t_loop = best_ms(loop_fn, args.repeats)
            torch.set_num_threads(1)
            t_one = best_ms(vec_fn, args.repeats)
            torch.set_num_threads(all_threads)
            t_all = best_ms(vec_fn, args.repeats)
        print(f"| {name:<17} | {t_loop:8.2f} | {t_one:16.2f} | {t_loop / t_one:7.1f}x | {t_all:17.2f} | "
              f"{t_loop / t_all:7.1f}x |")
    # the floor of any decoder: every map value must be read once (torch.amax, the fastest
    # full reduction here); a decoder can only be as many times faster than the loop as this
    with torch.inference_mode():
        flat = noisy.reshape(n * k, h * w)
        torch.set_num_threads(1)
        t_one = best_ms(lambda: flat.amax(-1), args.repeats)
        torch.set_num_threads(all_threads)
        t_all = best_ms(lambda: flat.amax(-1), args.repeats)
    mb = noisy.numel() * noisy.element_size() / 1e6
    print(f"\none read of the {mb:.1f} MB of maps (torch.amax), the floor of any decoder: {t_one:.2f} ms on 1 thread "
          f"({mb / t_one:.0f} GB/s), {t_all:.2f} ms on {all_threads} ({mb / t_all:.0f} GB/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
