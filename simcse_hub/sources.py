"""Several training sources in one run, every batch drawn from one of them.

In-batch negatives are only comparable within a source: a batch of NLI triplets and a batch of Wikipedia sentences
ask different questions of the encoder, and mixing them in one batch lets the model tell negatives apart by their
source instead of their meaning. :class:`SourceBatchSampler` therefore forms each batch from one source, and decides
which source comes next by a sampling rule, as sentence-transformers' multi-dataset batch samplers do:

* ``proportional``: every batch of every source once per epoch, in a random order, so each source is seen in
  proportion to its (weighted) size;
* ``round_robin``: one batch of each source in turn, until the source with the fewest batches is used up.

A source's weight scales its number of examples per epoch (2.0: each example twice, in two different batches; 0.5:
a random half). Under several processes, each global batch is split into one local batch per process, so at every
step all processes hold batches of the same source and the negatives gathered across them stay comparable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

SAMPLING = ("proportional", "round_robin")


class SourceBatchSampler(torch.utils.data.Sampler):
    """Batches of indices into the concatenation of several sources (``torch.utils.data.ConcatDataset`` order), each
    batch from one source; the same batches for the same seed and epoch, so an interrupted run resumes exactly.

    Args:
        sizes (`Sequence[int]`): the number of examples of each source.
        batch_size (`int`): examples per local batch (per process).
        num_processes (`int`, *optional*, defaults to 1): consecutive runs of this many local batches come from the
            same global batch (Accelerate gives process ``k`` the ``k``-th of each run).
        weights (`Sequence[float]`, *optional*): a positive weight per source (default: 1 each).
        sampling (`str`, *optional*, defaults to ``"proportional"``): ``"proportional"`` or ``"round_robin"``.
        seed (`int`, *optional*, defaults to 0): seeds the batches and their order, with the epoch.

    >>> sampler = SourceBatchSampler([6, 4], batch_size=2, seed=0)
    >>> len(sampler), [sampler.source_of(batch) for batch in sampler].count(1)
    (5, 2)
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, num_processes: int = 1,
                 weights: Sequence[float] | None = None, sampling: str = "proportional", seed: int = 0) -> None:
        weights = [1.0] * len(sizes) if weights is None else [float(weight) for weight in weights]
        if len(weights) != len(sizes):
            raise ValueError(f"{len(weights)} source weights for {len(sizes)} sources; give one weight per source.")
        if not all(np.isfinite(weight) and weight > 0 for weight in weights):
            raise ValueError(f"source weights must be positive numbers; got {weights}.")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling={sampling!r}: expected one of {list(SAMPLING)}.")
        if batch_size < 1 or num_processes < 1:
            raise ValueError(f"batch_size ({batch_size}) and num_processes ({num_processes}) must be >= 1.")
        self.sizes, self.weights, self.sampling = [int(size) for size in sizes], weights, sampling
        self.batch_size, self.num_processes, self.seed, self.epoch = batch_size, num_processes, seed, 0
        self.sampler = self  # Accelerate's set_epoch reaches a batch sampler's ``sampler`` under every wrapper
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])[:-1]  # (num_sources,)
        empty = [index for index, count in enumerate(self.batches_per_source()) if count == 0]
        if empty:
            raise ValueError(f"source {empty[0] + 1} gives no batch of {batch_size * num_processes} examples (it has "
                             f"{self.sizes[empty[0]]} examples, weight {self.weights[empty[0]]:g}); give it more "
                             "examples or a larger weight, or leave it out.")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _passes(self, source: int) -> list[int]:
        """The examples of each pass over ``source`` in an epoch: a weight of 2.5 is two whole passes and half a
        pass, each in a fresh order (batches never straddle two passes, so no batch holds an example twice)."""
        whole, fraction = divmod(self.weights[source], 1.0)
        passes = [self.sizes[source]] * int(whole)
        return passes + ([round(self.sizes[source] * fraction)] if round(self.sizes[source] * fraction) else [])

    def _batches_in(self, examples: int) -> int:
        """Global batches (``batch_size * num_processes`` examples) in a pass of ``examples``; the last partial one is
        kept only on one process and when it holds at least 2 examples (one example has no negative)."""
        full = self.batch_size * self.num_processes
        return examples // full + int(self.num_processes == 1 and examples % full >= 2)

    def batches_per_source(self) -> list[int]:
        """The global batches of each source per epoch."""
        return [sum(self._batches_in(examples) for examples in self._passes(source))
                for source in range(len(self.sizes))]

    def _global_batches(self, source: int, generator: torch.Generator) -> list[np.ndarray]:
        """This epoch's global batches of ``source``, as indices into the concatenation."""
        full, batches = self.batch_size * self.num_processes, []
        for examples in self._passes(source):
            order = torch.randperm(self.sizes[source], generator=generator)[:examples].numpy() + self.offsets[source]
            batches += [order[start:start + full] for start in range(0, self._batches_in(examples) * full, full)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        batches = [self._global_batches(source, generator) for source in range(len(self.sizes))]
        if self.sampling == "round_robin":
            rounds = min(len(source_batches) for source_batches in batches)
            order = [(source, index) for index in range(rounds) for source in range(len(batches))]
        else:
            order = [(source, index) for source, source_batches in enumerate(batches)
                     for index in range(len(source_batches))]
            order = [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]
        for source, index in order:
            batch = batches[source][index]
            for start in range(0, len(batch), self.batch_size):  # one local batch per process
                yield batch[start:start + self.batch_size].tolist()

    def __len__(self) -> int:
        counts = self.batches_per_source()
        rounds = min(counts) * len(counts) if self.sampling == "round_robin" else sum(counts)
        return rounds * self.num_processes

    def source_of(self, batch: Sequence[int]) -> int:
        """The source that ``batch`` (global indices) comes from."""
        return int(np.searchsorted(self.offsets, batch[0], side="right") - 1)


__all__ = ["SAMPLING", "SourceBatchSampler"]
