"""Each rank's share: disjoint, equal, covering every sample once; batches as tensors."""

import numpy as np
import pytest
import torch

from gpulab import preprocess as pp


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(("n", "world"), [(120, 1), (120, 2), (120, 3), (120, 8), (7, 7)])
def test_shards_of_all_ranks_cover_each_sample_exactly_once(n, world, shuffle):
    shards = [pp.shard_indices(n, r, world, shuffle=shuffle, seed=3) for r in range(world)]
    assert {len(s) for s in shards} == {n // world}
    together = np.concatenate(shards)
    assert sorted(together.tolist()) == list(range(n))


def test_remainder_is_padded_by_default_and_dropped_on_request():
    n, world = 10, 4
    padded = [pp.shard_indices(n, r, world) for r in range(world)]
    assert {len(s) for s in padded} == {3}  # ceil(10 / 4): every rank takes 3 steps
    counts = np.bincount(np.concatenate(padded), minlength=n)
    assert counts.min() == 1 and counts.sum() == 12  # all seen, 2 seen twice
    assert (counts == 2).sum() == 12 - n
    dropped = [pp.shard_indices(n, r, world, drop_last=True) for r in range(world)]
    assert {len(s) for s in dropped} == {2}
    counts = np.bincount(np.concatenate(dropped), minlength=n)
    assert counts.max() == 1 and counts.sum() == 8  # none twice, 10 % 4 left out


def test_shuffle_is_the_same_on_every_rank_and_changes_by_epoch():
    a0 = [pp.shard_indices(50, r, 2, shuffle=True, seed=1, epoch=0) for r in range(2)]
    again = [pp.shard_indices(50, r, 2, shuffle=True, seed=1, epoch=0) for r in range(2)]
    a1 = [pp.shard_indices(50, r, 2, shuffle=True, seed=1, epoch=1) for r in range(2)]
    assert all(np.array_equal(x, y) for x, y in zip(a0, again, strict=True))
    assert not np.array_equal(a0[0], a1[0])
    assert sorted(np.concatenate(a1).tolist()) == list(range(50))


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_batches_are_tensors_equal_to_the_numpy_samples(dataset, lazy, values, backend):
    samples = pp.windows(dataset if backend == "numpy" else lazy, "time", 20, 10)  # 29
    stacked = pp.stack_variables(samples)
    assert stacked.dims == ("sample", "channel", "window", "point")
    assert list(stacked.channel.values) == ["temperature", "pressure"]
    expected = np.stack([np.stack([values[v][s:s + 20] for v in ("temperature", "pressure")])
                         for s in range(0, 281, 10)])
    world, seen = 3, []
    lengths = set()
    for rank in range(world):
        loader = pp.ShardedBatches(stacked, batch_size=4, rank=rank, world_size=world,
                                   shuffle=True, seed=5, prefetch=2)
        loader.set_epoch(2)
        batches = list(loader)
        lengths.add(len(batches))
        assert len(batches) == len(loader) == 3  # 10 samples per rank: 4 + 4 + 2
        order = loader.indices()
        got = torch.cat(batches)
        assert got.dtype == torch.float32 and tuple(got.shape[1:]) == (2, 20, 7)
        np.testing.assert_array_equal(got.numpy(), expected[order])
        seen.extend(order.tolist())
    assert lengths == {3}
    # 29 samples on 3 ranks: padded to 30, sample 0 (the order's first) twice.
    assert sorted(set(seen)) == list(range(29)) and len(seen) == 30


def test_dataset_batches_are_dicts_of_tensors(dataset):
    samples = pp.windows(dataset.assign(height=("point", np.arange(7.0))), "time", 30)
    loader = pp.ShardedBatches(samples, batch_size=5, rank=0, world_size=1)
    first = next(iter(loader))
    assert set(first) == {"temperature", "pressure"}  # static "height" has no samples
    assert tuple(first["pressure"].shape) == (5, 30, 7)
    np.testing.assert_array_equal(first["pressure"].numpy(), samples.pressure.values[:5])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rank": 2, "world_size": 2}, "rank must be an integer in 0..1 \\(world_size=2\\), not 2"),
    ({"rank": -1, "world_size": 2}, "rank must be an integer in 0..1"),
    ({"rank": 0, "world_size": 0}, "world_size must be a positive integer, not 0"),
    ({"rank": 0, "world_size": 2, "batch_size": 0}, "batch_size must be a positive integer"),
    ({"world_size": 2}, "pass rank= and world_size="),
    ({"rank": 0, "world_size": 40, "drop_last": True}, "29 samples are fewer than "
     "world_size=40 ranks"),
    ({"rank": 0, "world_size": 1, "variables": ["wind"]}, "unknown variable 'wind'"),
])
def test_errors_name_what_to_fix(dataset, kwargs, message):
    samples = pp.windows(dataset, "time", 20, 10)
    kwargs = {"batch_size": 4, **kwargs}
    with pytest.raises(pp.PreprocessError, match=message):
        pp.ShardedBatches(samples, **kwargs)
