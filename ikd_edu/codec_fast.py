"""CPU fast paths of :mod:`ikd_edu.codec`: same results as its torch code, fewer and cheaper calls.

* :func:`argmax_rows` - first-maximum index of every row of a ``(M, L)`` float array, the
  rows split over ``torch.get_num_threads()`` threads (NumPy's SIMD argmax releases the GIL);
* :func:`decode_quarter` - the reference ``"quarter"`` decoding of a contiguous CPU float
  tensor ``(N, K, h, w)`` in NumPy, with per-pixel lookup tables.

Why: after the forward pass, decoding is one pass over the maps (``N K h w`` values) and
then a handful of ops on ``M = N K`` scalars; on CPUs the pass is memory-bound (two cores
read it faster than one) and each torch op on the scalars costs more than the NumPy one.
Measurements: benchmarks/README.md ("Codec fast paths").

Threads and processes: the worker threads are daemons created on first use; a forked child
(DataLoader workers) drops the parent's workers (:func:`_after_fork_in_child`) and makes its own.
"""
from __future__ import annotations

import functools
import os
import threading

import numpy as np
import torch

__all__ = ["argmax_rows", "decode_quarter"]

# below this many values one thread is faster than handing rows to a worker
_PARALLEL_MIN_ELEMENTS = 1 << 20


class _ArgmaxWorker:
    """A daemon thread that runs ``np.argmax(rows, -1, out)`` when asked.

    Two locks hand the job over and back: cheaper per round trip than a
    ``ThreadPoolExecutor``'s queue and ``Future``.
    """

    def __init__(self) -> None:
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._job: tuple[np.ndarray, np.ndarray] | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._loop, name="ikd-edu-argmax", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self._go.acquire()
            try:
                rows, out = self._job
                np.argmax(rows, -1, out)
            except BaseException as exc:  # handed to the caller of wait()
                self._error = exc
            self._done.release()

    def start(self, rows: np.ndarray, out: np.ndarray) -> None:
        self._job = (rows, out)
        self._go.release()

    def wait(self) -> bool:
        """Block until the job is done (re-raising its exception); whether the job was still running."""
        running = not self._done.acquire(blocking=False)
        if running:
            self._done.acquire()
        self._job, error, self._error = None, self._error, None
        if error is not None:
            raise error
        return running


_WORKERS: list[_ArgmaxWorker] = []
_WORKERS_LOCK = threading.Lock()  # one parallel argmax at a time; a concurrent caller runs on its own thread
_CALLER_SHARE: dict[int, float] = {}  # threads -> share of the rows the calling thread takes (learned)


def _after_fork_in_child() -> None:
    """A forked child has the worker objects but not their threads (and maybe a held lock)."""
    global _WORKERS_LOCK
    _WORKERS.clear()
    _WORKERS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def argmax_rows(flat: np.ndarray) -> np.ndarray:
    """``flat (M, L)`` -> first-maximum index ``(M,)`` int64, rows split over ``torch.get_num_threads()``.

    The calling thread takes the first ``share * M`` rows, the workers the rest in equal
    blocks. Waking a sleeping worker costs the caller time, and a caller that has to wait
    for a worker pays a second wake-up, while a caller that ends last pays only the gap; so
    the caller's share is tuned call by call until it waits in about one call in ten
    (stochastic quantile tracking: ``share += 0.01 (waited - 0.1)``, kept in
    ``[0.5 / threads, 0.9]``). Small inputs, one thread, or a concurrent caller: plain
    ``np.argmax`` on this thread.
    """
    m = flat.shape[0]
    out = np.empty(m, np.int64)
    threads = min(torch.get_num_threads(), m, 8)
    if threads < 2 or flat.size < _PARALLEL_MIN_ELEMENTS or not _WORKERS_LOCK.acquire(blocking=False):
        return np.argmax(flat, -1, out)
    lock = _WORKERS_LOCK
    try:
        while len(_WORKERS) < threads - 1:
            _WORKERS.append(_ArgmaxWorker())
        share = _CALLER_SHARE.get(threads, 1 / threads)
        first = min(max(round(m * share), 1), m - threads + 1)  # every thread gets at least one row
        bounds = [first + (m - first) * i // (threads - 1) for i in range(threads)]
        workers = _WORKERS[: threads - 1]
        for worker, a, b in zip(workers, bounds[:-1], bounds[1:]):
            worker.start(flat[a:b], out[a:b])
        np.argmax(flat[:first], -1, out[:first])
        waited = any([worker.wait() for worker in workers])
    except BaseException:  # e.g. Ctrl-C in a notebook while a worker still runs: never hand it another job
        _WORKERS.clear()
        raise
    finally:
        lock.release()
    _CALLER_SHARE[threads] = min(max(share + 0.01 * (waited - 0.1), 0.5 / threads), 0.9)
    return out


@functools.lru_cache(maxsize=8)
def _quarter_tables(m: int, h: int, w: int, dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables of ``"quarter"`` decoding for ``m`` maps of ``h x w``, per pixel index ``i``:

    * ``xy (2, h w)``: its ``(x, y)`` as ``dtype``;
    * ``near (5, h w)``: the indices ``i + (1, w, -1, -w, 0)`` of its right, lower, left and
      upper neighbours and of itself where the quarter shift applies (``1 < x < w-1``,
      ``1 < y < h-1``), and ``i`` five times elsewhere (so the differences, and the shift, are 0);
    * ``starts (m,)``: the index of each map's first pixel in the batch.
    """
    i = np.arange(h * w)
    y, x = np.divmod(i, w)
    inside = (x > 1) & (x < w - 1) & (y > 1) & (y < h - 1)
    near = i + np.where(inside, np.array([1, w, -1, -w, 0])[:, None], 0)
    return np.stack([x, y]).astype(dtype), near, np.arange(0, m * h * w, h * w)


def decode_quarter(hm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``"quarter"`` decoding of a contiguous CPU float tensor ``(N, K, h, w)``: same result as the torch path.

    After the argmax the work is on ``M = N K`` scalars: the lookup tables
    (:func:`_quarter_tables`) replace the divmod, the border test and the masks, and a
    ``(5, M)`` layout keeps every op contiguous. ``maxvals`` stay differentiable w.r.t.
    the heatmaps when those require grad.
    """
    n, k, h, w = hm.shape
    m = n * k
    flat = (hm.detach() if hm.requires_grad else hm).numpy().reshape(m, h * w)
    idx = argmax_rows(flat)  # (M,)
    xy, near, starts = _quarter_tables(m, h, w, flat.dtype.type)
    pos = near.take(idx, 1)  # (5, M): right, lower, left, upper neighbour and argmax, in each map
    pos += starts  # ... in the batch
    values = flat.take(pos)  # (5, M)
    maxvals = values[4]
    shift = np.subtract(values[:2], values[2:4], out=values[:2])  # (2, M): H[x+1] - H[x-1], H[y+1] - H[y-1]
    np.sign(shift, out=shift)
    shift *= 0.25
    coords = np.add(shift.T, xy.take(idx, 1).T, order="C")  # (M, 2)
    if not maxvals.min() > 0:  # reference mask: pred *= (maxval > 0); NaN is not > 0
        coords[~(maxvals > 0)] = 0
    coords_t = torch.from_numpy(coords.reshape(n, k, 2))
    if hm.requires_grad:
        idx_t = torch.from_numpy(idx.reshape(n, k, 1))
        return coords_t, hm.reshape(n, k, h * w).gather(-1, idx_t)[..., 0]
    return coords_t, torch.from_numpy(maxvals.reshape(n, k))
