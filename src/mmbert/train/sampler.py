"""Which examples each process sees at each optimizer step: a pure function of (seed, step).

Epoch ``e`` visits the dataset in the order ``randperm(n)`` drawn from a generator seeded with
(seed, e); step ``k`` of the epoch takes the ``k``-th global batch of that order (the incomplete tail
is dropped). The global batch is cut into ``grad_accum`` x ``world_size`` micro-batches of
``batch_size``. So the data position is just the step number: a resumed run continues exactly where
the interrupted one was, and 2 processes of batch B see the same examples per step as 1 of batch 2B.
"""

from __future__ import annotations

import numpy as np
import torch


class StepSampler:
    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        grad_accum: int = 1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.num_examples, self.batch_size, self.grad_accum = num_examples, batch_size, grad_accum
        self.world_size, self.rank, self.seed, self.shuffle = world_size, rank, seed, shuffle
        self.global_batch = batch_size * grad_accum * world_size
        if num_examples < self.global_batch:
            raise ValueError(
                f"the dataset has {num_examples} examples, fewer than one global batch of {self.global_batch} "
                f"(batch_size {batch_size} x grad_accum {grad_accum} x {world_size} processes)"
            )
        self.steps_per_epoch = num_examples // self.global_batch

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_examples))
        seed = int(np.random.SeedSequence([self.seed, epoch, 0x5A3]).generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)
        return torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(seed)).tolist()

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, step within the epoch) of global step ``step``."""
        return divmod(step, self.steps_per_epoch)

    def micro_batches(self, epoch: int, first_step: int = 0) -> list[list[int]]:
        """This process's micro-batches (grad_accum per step) for steps first_step.. of ``epoch``, in order."""
        order = self.order(epoch)
        out = []
        for k in range(first_step, self.steps_per_epoch):
            chunk = order[k * self.global_batch : (k + 1) * self.global_batch]
            for j in range(self.grad_accum):
                start = (j * self.world_size + self.rank) * self.batch_size
                out.append(chunk[start : start + self.batch_size])
        return out
