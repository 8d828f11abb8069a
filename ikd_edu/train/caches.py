"""Caches for flip-only augmentation: training crops cut once, teacher outputs computed once.

With flip-only augmentation a training crop is a function of ``(record, flipped)`` alone,
so both versions of every training record can be made once and gathered afterwards:

* :class:`CropCache` (``data.cache_crops``): image, target heatmaps and target weights;
* :class:`TeacherCache` (``distill.teacher_cache``): the frozen teacher's taps.

Both are built from the same batches (:func:`_flip_fixed_batches`), in the order of the
training indices, and index their rows by dataset record (:func:`_cache_rows`).
:class:`CacheStore` keeps them between the runs of one process (the quickstart's variants
train on the same crops from the same teacher).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ikd_edu.inference import autocast_context
from ikd_edu.train.config import Config


def _cache_rows(n: int, indices) -> torch.Tensor:
    """``(n,)`` row of each dataset record in a cache built over ``indices`` (-1: not cached)."""
    rows = torch.full((n,), -1, dtype=torch.long)
    rows[torch.as_tensor(np.asarray(indices, dtype=np.int64))] = torch.arange(len(indices))
    return rows


def _flip_fixed_batches(dataset, indices, cfg: Config):
    """``(flipped, batch)`` over the training crops of ``indices``: all unflipped (0), then all flipped (1).

    With flip-only augmentation these are the only two crops a training item can be; both
    caches are built from them, in ``indices`` order, ``cfg.run.eval_batch_size`` at a time.
    """
    import copy
    import dataclasses

    for flipped, flip_prob in enumerate((0.0, 1.0)):
        fixed = copy.copy(dataset)
        fixed.augment = dataclasses.replace(dataset.augment, flip_prob=flip_prob)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(fixed, [int(i) for i in indices]),
                                             batch_size=cfg.run.eval_batch_size, shuffle=False,
                                             num_workers=cfg.data.num_workers)
        for batch in loader:
            yield flipped, batch


class TeacherCache:
    """The frozen teacher's outputs, computed once per training crop and reused (``distill.teacher_cache``).

    On a CPU the teacher's forward pass is most of a distillation step (benchmarks/README.md).
    The teacher is frozen,
    so its output for a crop never changes. With flip-only augmentation a training crop is
    a function of ``(record, flipped)`` alone, so the teacher is run once on **both**
    versions of every training crop - unflipped and flipped, cut exactly as the training
    dataset cuts them - and its taps are stored at float16: ``taps[name]`` is
    ``(2, R, ...)``, index 0 unflipped, 1 flipped. A lookup is then a gather, and every
    heatmap, feature and affinity target equals the teacher's forward pass on the very crop
    the student sees (to float16 rounding; tested against on-the-fly outputs).

    Mirroring the unflipped output instead would need a mirror-symmetric network, which a
    trained teacher is not. The config rejects scale / rotation / half-body augmentation
    with the cache (those crops are drawn afresh every step: run the teacher on the fly).
    Off by default (``teacher_cache=false`` runs the teacher on every augmented batch).
    """

    def __init__(self, rows: torch.Tensor, taps: dict[str, torch.Tensor]) -> None:
        self.rows = rows  # (len(dataset),) cache row of each record, -1 = not cached; kept on the CPU
        self.taps = taps  # name -> (2, R, ...) float16, index 0 unflipped, 1 flipped

    @classmethod
    @torch.no_grad()
    def build(cls, teacher: nn.Module, dataset, indices, names: list[str], cfg: Config, device: torch.device,
              amp_dtype: torch.dtype | None = None, channels_last: bool = False,
              crops: "CropCache | None" = None) -> "TeacherCache":
        """Run ``teacher`` over the unflipped and flipped training crops of ``indices``; keep the taps ``names``.

        With a :class:`CropCache` built over the same ``indices`` its stored crops are used
        (the very same batches) instead of cutting them again.
        """
        if crops is not None:
            batches = ((f, {"image": chunk}) for f in (0, 1) for chunk in crops.image[f].split(cfg.run.eval_batch_size))
        else:
            batches = _flip_fixed_batches(dataset, indices, cfg)
        chunks: dict[str, list[list[torch.Tensor]]] = {n: [[], []] for n in names}
        for flipped, batch in batches:
            images = batch["image"].to(device, non_blocking=True)  # (B, 3, H, W)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp_dtype):
                out = teacher.forward_taps(images, names)
            for n in names:
                chunks[n][flipped].append(out[n].detach().to(torch.float16).contiguous())
        rows = _cache_rows(len(dataset), indices)
        return cls(rows, {n: torch.stack([torch.cat(c) for c in v]) for n, v in chunks.items()})

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.taps.values())

    def select(self, names: list[str]) -> "TeacherCache":
        """The same cache with only the taps ``names`` (shared storage, no copy)."""
        return TeacherCache(self.rows, {n: self.taps[n] for n in names})

    def lookup(self, index: torch.Tensor, flipped: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher taps (float32) of the training crops of records ``index (B,)``, flipped where ``flipped (B,)``."""
        rows = self.rows[index.cpu()]  # checked on the host: no device sync inside a step
        if bool((rows < 0).any()):
            raise RuntimeError("TeacherCache: a batch holds a record that was not cached")
        flip = flipped.cpu().long()
        out = {}
        for name, store in self.taps.items():
            out[name] = store[flip.to(store.device), rows.to(store.device)].float()  # (B, ...)
        return out


class CropCache:
    """Training crops cut and encoded once, then gathered from memory (``data.cache_crops``).

    With flip-only augmentation a training item is a function of ``(record, flipped)`` alone,
    so both versions of every training record are made once: ``image (2, R, 3, H, W)``,
    ``heatmaps (2, R, K, h, w)``, ``target_weight (2, R, K)`` (index 0 unflipped, 1 flipped),
    in the dataset's own dtypes. A batch of keys ``(index, seed)`` from the batch sampler is
    then a gather instead of R crops cut, warped and encoded by DataLoader workers on every
    step (on a CPU a large share of a student step). Each key's flip is drawn
    exactly as the dataset draws it (:meth:`flipped`), so a run with the cache sees the very
    same batches as one without (tested). Memory: ``2 R (3HW + Khw + K)`` floats.
    """

    def __init__(self, dataset, rows: torch.Tensor, image: torch.Tensor, heatmaps: torch.Tensor,
                 target_weight: torch.Tensor) -> None:
        self.dataset = dataset
        self.rows = rows  # (len(dataset),) row of each record, -1 = not cached
        self.image, self.heatmaps, self.target_weight = image, heatmaps, target_weight

    @classmethod
    def build(cls, dataset, indices, cfg: Config) -> "CropCache":
        """Cut the crops of ``indices`` unflipped and flipped (``cfg.data.num_workers`` processes)."""
        keys = ("image", "heatmaps", "target_weight")
        parts: dict[str, list[list[torch.Tensor]]] = {k: [[], []] for k in keys}
        for flipped, batch in _flip_fixed_batches(dataset, indices, cfg):
            for k in keys:
                parts[k][flipped].append(batch[k])
        rows = _cache_rows(len(dataset), indices)
        return cls(dataset, rows, *(torch.stack([torch.cat(p) for p in parts[k]]) for k in keys))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.image, self.heatmaps, self.target_weight))

    def flipped(self, seed: int) -> bool:
        """The flip the dataset draws for an item seeded with ``seed`` (see ``SeededSamples``)."""
        from ikd_edu.data.transforms import sample_augmentation

        rng = self.dataset.seeded_rng(seed)  # half-body (off here) would draw before the flip
        return sample_augmentation(rng, self.dataset.augment)[2]

    def batch(self, keys: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """The training batch of ``keys`` (what the DataLoader would collate): image, heatmaps, weights, index, flipped."""
        index = torch.tensor([int(i) for i, _ in keys], dtype=torch.long)
        flipped = torch.tensor([self.flipped(seed) for _, seed in keys])
        rows = self.rows[index]
        if bool((rows < 0).any()):
            raise RuntimeError("CropCache: a batch holds a record that was not cached")
        f = flipped.long()
        return {"image": self.image[f, rows], "heatmaps": self.heatmaps[f, rows],
                "target_weight": self.target_weight[f, rows], "index": index, "flipped": flipped}


class CacheStore:
    """Crop and teacher caches kept between the training runs of one process.

    The quickstart trains six students on the same crops with the same teacher: each run
    would otherwise cut every crop and run the teacher over them again. Pass one store to
    every :func:`ikd_edu.train.engine.train` call; a run reuses a cache whose key (data
    config, training records, and for the teacher its weights and precision) equals its own,
    and a teacher cache holding a superset of its taps. The run that builds a cache pays its
    time (``train_s``, ``teacher_cache_s``); a run that reuses one pays nothing.
    """

    def __init__(self) -> None:
        self._crops: dict[str, CropCache] = {}
        self._teacher: dict[str, TeacherCache] = {}

    def crops(self, key: str, build) -> tuple[CropCache, bool]:
        """``(cache, reused)``: the crop cache of ``key``, built by ``build()`` the first time."""
        if key in self._crops:
            return self._crops[key], True
        self._crops[key] = cache = build()
        return cache, False

    def teacher(self, key: str, names: list[str], build) -> tuple[TeacherCache, bool]:
        """``(cache, reused)``: a teacher cache of ``key`` with the taps ``names`` (a stored superset is reused)."""
        stored = self._teacher.get(key)
        if stored is not None and set(names) <= set(stored.taps):
            return stored.select(names), True
        cache = build()
        if stored is None or set(stored.taps) <= set(cache.taps):
            self._teacher[key] = cache
        return cache, False
