"""Several sources in one run: every batch from one source, in the stated proportions, the same batches for the same
seed and epoch."""

from __future__ import annotations

import collections

import pytest

from simcse_hub.data import SourceBatchSampler


def sources_of(sampler: SourceBatchSampler, batches: list[list[int]]) -> list[int]:
    return [sampler.source_of(batch) for batch in batches]


def test_every_batch_from_one_source_and_every_example_once_per_pass():
    sampler = SourceBatchSampler([40, 24, 16], batch_size=8, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5 + 3 + 2
    for batch in batches:
        source = sampler.source_of(batch)
        assert all(sampler.source_of([index]) == source for index in batch)
        assert len(set(batch)) == len(batch)
    assert sorted(index for batch in batches for index in batch) == list(range(80))


def test_proportional_sampling_follows_the_weighted_sizes():
    sampler = SourceBatchSampler([64, 32], batch_size=4, weights=[1.0, 2.0], seed=0)
    counts = collections.Counter(sources_of(sampler, list(sampler)))
    assert counts == {0: 16, 1: 16}  # 32 examples seen twice weigh as much as 64 seen once
    sampler = SourceBatchSampler([64, 32], batch_size=4, weights=[0.5, 1.0], seed=0)
    assert collections.Counter(sources_of(sampler, list(sampler))) == {0: 8, 1: 8}


def test_a_weight_above_one_never_puts_an_example_twice_in_a_batch():
    sampler = SourceBatchSampler([10, 5], batch_size=3, weights=[1.0, 2.5], seed=1)
    for batch in sampler:
        assert len(set(batch)) == len(batch)


def test_round_robin_alternates_until_the_smallest_source_is_used_up():
    sampler = SourceBatchSampler([40, 12], batch_size=4, sampling="round_robin", seed=0)
    assert sources_of(sampler, list(sampler)) == [0, 1, 0, 1, 0, 1]
    assert len(sampler) == 6


def test_same_seed_and_epoch_give_the_same_batches_and_a_new_epoch_reshuffles():
    first = SourceBatchSampler([30, 20], batch_size=5, seed=7)
    second = SourceBatchSampler([30, 20], batch_size=5, seed=7)
    assert list(first) == list(second)
    epoch_0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch_0
    assert first.sampler is first  # what Accelerate's set_epoch reaches under its wrappers


def test_under_several_processes_each_run_of_local_batches_is_one_global_batch():
    sampler = SourceBatchSampler([24, 16], batch_size=4, num_processes=2, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 * (3 + 2)
    assert all(len(batch) == 4 for batch in batches)  # no partial batch: every process gets a full share
    for step in range(0, len(batches), 2):  # what process 0 and process 1 take at the same step
        assert sampler.source_of(batches[step]) == sampler.source_of(batches[step + 1])


def test_a_last_partial_batch_is_kept_on_one_process_when_it_has_negatives():
    assert SourceBatchSampler([10], batch_size=4).batches_per_source() == [3]  # 4 + 4 + 2
    assert SourceBatchSampler([9], batch_size=4).batches_per_source() == [2]  # a batch of 1 has no negative


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"weights": [1.0]}, r"source weights \[1.0\]: expected one positive number per source \(2\)"),
    ({"weights": [1.0, 0.0]}, "expected one positive number per source"),
    ({"weights": [1.0, float("nan")]}, "expected one positive number per source"),
    ({"sampling": "random"}, "expected one of"),
    ({"batch_size": 32, "num_processes": 2}, "source 1 gives no batch of 64 examples"),
])
def test_bad_settings_name_what_to_change(kwargs, message):
    settings = {"sizes": [40, 12], "batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        SourceBatchSampler(**settings)
