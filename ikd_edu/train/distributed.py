"""Multi-process training with ``torchrun`` on the same code path as a single process.

``torchrun --nproc_per_node=N -m ikd_edu.cli train student --preset ...`` starts N copies
of the program; each reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from its
environment. Without those variables (a plain ``ikd-edu train ...``) everything here is a
no-op: world size 1, rank 0.

What changes with N processes (and nothing else does):

* :func:`init_distributed` joins the process group (``nccl`` on CUDA, ``gloo`` on CPU) and
  pins each process to GPU ``LOCAL_RANK``;
* the trained module is wrapped in ``DistributedDataParallel`` (gradients are averaged
  across processes during ``backward``);
* :class:`ResumableBatchSampler` deals every global batch out to the ranks - the same
  seeded order as one process with an N times larger batch, and it can start in the
  middle of an epoch (resume);
* logged losses are averaged over ranks, evaluation predictions gathered on rank 0;
* only rank 0 prints, logs and writes checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, GPU ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 prints, logs and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_env() -> DistInfo:
    """Read ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by torchrun); defaults 0 / 1 / 0."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when ``WORLD_SIZE > 1`` (else do nothing) and return the info.

    Backend: ``nccl`` for CUDA devices, ``gloo`` otherwise. Safe to call twice.
    """
    info = dist_env()
    if info.world_size > 1 and not (dist.is_available() and dist.is_initialized()):
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return info


def cleanup_distributed() -> None:
    """Leave the process group (end of training)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (in place; returned for convenience)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over ranks (in place)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list on every rank (``[obj]`` in one process)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` when running distributed, else ``module`` itself."""
    if not is_initialized():
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DDP(module, device_ids=ids)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


# --------------------------------------------------------------------------------------
# The resumable, seeded sample order
# --------------------------------------------------------------------------------------
def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of a run seeded ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def epoch_order(seed: int, epoch: int, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The shuffled sample order of one epoch and a seed for every sample.

    Returns ``(order (M,), sample_seeds (M,))`` int64: ``order`` is a permutation of
    ``indices``; ``sample_seeds[i]`` seeds the augmentation of the i-th sample. Both depend
    only on ``(seed, epoch)``: any process can recompute them, after a crash or on another rank.
    """
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    perm = torch.randperm(len(idx), generator=g)
    sample_seeds = torch.randint(0, 2**62, (len(idx),), generator=g, dtype=torch.int64)
    return idx[perm], sample_seeds


def group_order(order: torch.Tensor, seeds: torch.Tensor, group_of) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder an epoch so the records of one image are adjacent, images in order of first appearance.

    Each record keeps its sample seed (so its augmentation is the one the ungrouped order
    draws); only which records share a batch changes. A batch boundary can split an image:
    the device pipeline keeps the last decoded image for the next batch.
    """
    groups = torch.as_tensor(np.asarray(group_of, dtype=np.int64))[order]  # (M,) image of each sample
    first = torch.full((int(groups.max()) + 1 if len(groups) else 1,), len(groups), dtype=torch.long)
    first.scatter_reduce_(0, groups, torch.arange(len(groups)), reduce="amin")  # first position of each image
    perm = torch.sort(first[groups], stable=True).indices
    return order[perm], seeds[perm]


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(dataset_index, sample_seed)`` for one rank of one epoch, from any batch on.

    The epoch's order (:func:`epoch_order`) is cut into ``steps_per_epoch`` global batches of
    ``batch_size * world_size`` samples (the remainder is dropped, as ``drop_last=True``);
    rank r takes the r-th slice of ``batch_size`` from each global batch. So N processes
    with batch B see exactly the samples (and augmentations) one process with batch N x B
    sees, and ``start_batch`` skips the batches an interrupted run already trained on.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, epoch: int,
                 rank: int = 0, world_size: int = 1, start_batch: int = 0, group_of=None) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        # group_of: (len(dataset),) image of every record; when given, the records of one image
        # follow each other (the device pipeline decodes each image once per epoch)
        self.group_of = None if group_of is None else np.asarray(group_of, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed, self.epoch = int(seed), int(epoch)
        self.rank, self.world_size = int(rank), int(world_size)
        self.start_batch = int(start_batch)
        self.global_batch = self.batch_size * self.world_size

    @staticmethod
    def steps_per_epoch(num_samples: int, batch_size: int, world_size: int = 1) -> int:
        return num_samples // (batch_size * world_size)

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch(len(self.indices), self.batch_size, self.world_size) - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, seeds = epoch_order(self.seed, self.epoch, self.indices)
        if self.group_of is not None:
            order, seeds = group_order(order, seeds, self.group_of)
        n_batches = self.steps_per_epoch(len(self.indices), self.batch_size, self.world_size)
        for b in range(self.start_batch, n_batches):
            lo = b * self.global_batch + self.rank * self.batch_size
            hi = lo + self.batch_size
            yield list(zip(order[lo:hi].tolist(), seeds[lo:hi].tolist()))


class RunBatchSampler(torch.utils.data.Sampler):
    """Every batch a run still has to train on, epoch after epoch: one DataLoader for the whole run.

    The batches of :class:`ResumableBatchSampler` for epoch ``epoch`` from ``start_batch`` on,
    then the next epochs from batch 0, until ``steps`` batches were given. Workers are started
    once and keep prefetching across epoch boundaries (a loader rebuilt every epoch restarts
    its workers and drains its queue at every boundary).
    """

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, epoch: int, start_batch: int,
                 steps: int, rank: int = 0, world_size: int = 1, group_of=None) -> None:
        self.args = (indices, batch_size, seed)
        self.epoch, self.start_batch, self.steps = int(epoch), int(start_batch), int(steps)
        self.rank, self.world_size, self.group_of = rank, world_size, group_of

    def __len__(self) -> int:
        return max(self.steps, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        left, epoch, start = self.steps, self.epoch, self.start_batch
        while left > 0:
            sampler = ResumableBatchSampler(*self.args, epoch, self.rank, self.world_size, start_batch=start,
                                            group_of=self.group_of)
            if len(sampler) == 0 and start == 0:
                return  # no full batch in an epoch
            for batch in sampler:
                yield batch
                left -= 1
                if left == 0:
                    return
            epoch, start = epoch + 1, 0


class SeededSamples(torch.utils.data.Dataset):
    """Wrap a dataset so item ``(index, seed)`` is augmented from its own seed.

    The datasets draw their augmentation from torch's global generator; seeding it per
    sample (inside ``fork_rng``, so nothing else is disturbed) makes every sample a pure
    function of ``(index, seed)``: the same after a resume, on any rank, in any worker.
    """

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also queues a lazy seeding of every
            # accelerator, recording a stack trace each time
            torch.default_generator.manual_seed(int(seed))
            return self.dataset[int(index)]


def rank_slice(indices: Sequence[int], rank: int, world_size: int) -> np.ndarray:
    """Evaluation split: rank r takes every world_size-th index starting at r (no padding)."""
    return np.asarray(indices, dtype=np.int64)[rank::world_size]
