"""Seeded sampling: each step's batch and each item's augmentation are functions of (seed, step) alone.

That is what makes a trial reproducible whatever ``train.num_workers`` is, and a resumed trial equal to an
uninterrupted one.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["SeededItems", "StepBatches", "make_loader", "seed_everything"]


class SeededTransform:
    """Wraps an albumentations pipeline so that each item's augmentation is drawn from its own seed.

    The seed of the item at position ``i`` of epoch ``e`` derives from (trial seed, e, i) alone, so the augmented
    batches are the same whatever the number of workers and whether the trial was resumed mid-epoch. Not having a
    ``set_random_seed`` attribute itself also stops the dataset from reseeding it per worker.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seed = 0

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        self.inner.set_random_seed(self.seed)
        return self.inner(**kwargs)


class SeededItems(torch.utils.data.Dataset):
    """``dataset[(index, seed)]``: the item at ``index`` augmented with ``seed``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        if hasattr(dataset.transform, "set_random_seed"):
            dataset.transform = SeededTransform(dataset.transform)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        if isinstance(self.dataset.transform, SeededTransform):
            self.dataset.transform.seed = seed
        return self.dataset[index]


class StepBatches(torch.utils.data.Sampler):
    """Batches ``[(index, item_seed)] * batch_size`` for steps ``start .. steps - 1``.

    Epoch ``e`` is a permutation of the training set drawn from ``(seed, e)``; step ``s`` is batch ``s % spe`` of
    epoch ``s // spe`` (incomplete last batches are dropped). Starting at any step gives exactly the batches an
    uninterrupted run would see there, which is what makes a resumed trial equal an uninterrupted one.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, steps: int) -> None:
        self.n, self.batch_size, self.seed, self.start, self.steps = n, batch_size, seed, start, steps
        self.steps_per_epoch = n // batch_size

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 0x5EED, epoch])
        return rng.permutation(self.n), rng.integers(0, 2**31 - 1, size=self.n)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        current, order, seeds = -1, None, None
        for step in range(self.start, self.steps):
            epoch, b = divmod(step, self.steps_per_epoch)
            if epoch != current:
                current, (order, seeds) = epoch, self._epoch(epoch)
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield [(int(i), int(s)) for i, s in zip(order[sl], seeds[sl])]


def worker_init(worker_id: int, seed: int) -> None:
    # Items are seeded one by one (see SeededTransform); this covers any other global-RNG use in a worker.
    s = (seed * 1000 + worker_id) % 2**32
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)




def make_loader(items: SeededItems, *, batch_size: int, seed: int, start: int, steps: int, num_workers: int,
                pin_memory: bool) -> torch.utils.data.DataLoader:
    """The training batches of steps ``start .. steps - 1`` (see :class:`StepBatches`)."""
    return torch.utils.data.DataLoader(
        items, batch_sampler=StepBatches(len(items), batch_size, seed, start, steps), num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=functools.partial(worker_init, seed=seed) if num_workers else None,
        generator=torch.Generator().manual_seed(seed),  # keeps the global RNG out of the loader
        persistent_workers=False, prefetch_factor=4 if num_workers else None,
    )


def seed_everything(seed: int, deterministic: bool, cuda: bool) -> None:
    """Seed Python, NumPy and torch; set (or unset) deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if cuda:
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = not deterministic  # autotuning picks kernels by timing: not reproducible
        torch.backends.cudnn.deterministic = deterministic
    # Set either way: a reused Tune actor must not inherit the previous trial's setting.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
