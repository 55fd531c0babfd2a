"""Which patches each process reads at each step: global batches, split by rank and micro-batch.

The order of an epoch is a stream of seeded permutations of the training set (a fresh one per pass,
so ``steps_per_epoch`` may exceed one pass). Optimiser step ``g`` takes stream positions
``[g*B, (g+1)*B)`` (``B`` the global batch), cut into ``accumulate_steps`` consecutive micro-batches;
rank ``r`` of ``W`` takes every ``W``-th patch of each micro-batch, starting at ``r``. So:

* the union of the ranks' micro-batches is exactly the batch one process would read;
* a rank reads only its own shard (nothing else is ever indexed by it);
* any position is computed, not replayed, so a resumed run starts at its step without reading the
  skipped patches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def split_batch(batch_size: int, world_size: int, accumulate_steps: int) -> int:
    """Patches one process reads per micro-batch; a clear error when the global batch does not split."""
    parts = world_size * accumulate_steps
    if batch_size % parts:
        raise ValueError(
            f"batch_size {batch_size} does not split into {world_size} process(es) x {accumulate_steps} "
            f"accumulation step(s); choose a batch_size divisible by {parts}"
        )
    return batch_size // parts


class ShardedBatchSampler(Sampler[list[int]]):
    """This rank's micro-batches (lists of dataset indices) of one epoch, from step ``start_step``.

    Yields ``accumulate_steps`` micro-batches per optimiser step for steps
    ``start_step .. steps - 1``; see the module docstring for the order.
    """

    def __init__(
        self,
        n: int,
        *,
        batch_size: int,
        steps: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        accumulate_steps: int = 1,
        start_step: int = 0,
        shuffle: bool = True,
    ) -> None:
        if n <= 0:
            raise ValueError("the training set is empty: nothing to sample (check the dataset path and split)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self.per_rank = split_batch(batch_size, world_size, accumulate_steps)
        self.n, self.batch_size, self.steps = n, batch_size, steps
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.accumulate_steps, self.start_step, self.shuffle = accumulate_steps, start_step, shuffle
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, p: int) -> np.ndarray:
        if p not in self._perms:
            self._perms = {
                p: np.random.default_rng([self.seed, self.epoch, p]).permutation(self.n)
                if self.shuffle
                else np.arange(self.n)
            }
        return self._perms[p]

    def _index(self, position: int) -> int:
        p, i = divmod(position, self.n)
        return int(self._perm(p)[i])

    def global_batch(self, step: int) -> list[int]:
        """Every index of optimiser step ``step`` (all ranks, all micro-batches), in order."""
        first = step * self.batch_size
        return [self._index(first + k) for k in range(self.batch_size)]

    def micro_batches(self, step: int) -> list[list[int]]:
        """This rank's micro-batches of optimiser step ``step``."""
        batch = self.global_batch(step)
        m = self.batch_size // self.accumulate_steps
        return [batch[a * m : (a + 1) * m][self.rank :: self.world_size] for a in range(self.accumulate_steps)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.steps):
            yield from self.micro_batches(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.accumulate_steps
