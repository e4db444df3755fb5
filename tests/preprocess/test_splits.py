"""Splits are contiguous blocks with a window-1 gap: no sample shares a step across them."""

import numpy as np
import pytest

from gpulab import preprocess as pp


def _steps_of(split_ds, size, stride):
    """The set of time steps each sample of a windowed split covers."""
    w = pp.windows(split_ds, "time", size, stride)
    return {int(t) for s in w.start.values for t in range(s, s + size)}


@pytest.mark.parametrize("window", [1, 12, 24])
def test_no_sample_shares_a_step_with_another_split(dataset, window):
    parts = pp.split(dataset, "time", (0.6, 0.2, 0.2), window=window)
    assert list(parts) == ["train", "validation", "test"]
    steps = {name: _steps_of(p, window, 1) for name, p in parts.items()}
    assert not steps["train"] & steps["validation"]
    assert not steps["validation"] & steps["test"]
    assert not steps["train"] & steps["test"]
    # Blocks are in order, window-1 steps apart, and use every other step.
    times = [p.time.values for p in parts.values()]
    for before, after in zip(times, times[1:], strict=False):
        assert after[0] - before[-1] - 1 == window - 1
    assert sum(len(t) for t in times) == 300 - 2 * (window - 1)


def test_windows_of_the_whole_series_assigned_by_first_step_reach_no_other_split(dataset):
    size = 16
    bounds = pp.split_bounds(300, window=size)
    whole = pp.windows(dataset, "time", size, 1)
    checked = 0
    for start in whole.sample.values:
        home = [name for name, r in bounds.items() if start in r]
        if not home:  # starts in a gap: belongs to no split
            continue
        steps = set(range(start, start + size))
        for name, r in bounds.items():
            if name != home[0]:
                assert not steps & set(r), f"window at {start} reaches into {name}"
        checked += 1
    # Every step of every block starts a window, but the series' last size-1 steps.
    assert checked == sum(len(r) for r in bounds.values()) - (size - 1)


def test_bounds_use_fractions_and_give_rounding_to_train():
    bounds = pp.split_bounds(1000, {"train": 0.8, "validation": 0.2}, window=11)
    assert bounds == {"train": range(0, 792), "validation": range(802, 1000)}
    assert pp.split_bounds(10, (0.5, 0.5)) == {"train": range(0, 5), "validation": range(5, 10)}


def test_split_slices_are_lazy(lazy):
    parts = pp.split(lazy, "time", window=5)
    assert all(p.temperature.chunks is not None for p in parts.values())
    np.testing.assert_array_equal(parts["test"].temperature.values,
                                  lazy.temperature.values[-parts["test"].sizes["time"]:])


@pytest.mark.parametrize(("fractions", "message"), [
    ((0.7, 0.2), "fractions must sum to 1, not 0.9"),
    ((0.5, 0.5, 0.5), "fractions must sum to 1, not 1.5"),
    ((1.2, -0.2), "fraction of 'validation' must be a number > 0, not -0.2"),
    ({"train": "most"}, "fraction of 'train' must be a number > 0, not 'most'"),
    ((0.25,) * 4, "fractions must be a dict of name -> fraction or 1 to 3 numbers"),
])
def test_bad_fractions_name_what_to_fix(dataset, fractions, message):
    with pytest.raises(pp.PreprocessError, match=message) as info:
        pp.split(dataset, "time", fractions)
    assert info.value.field == "fractions"


def test_too_little_data_for_the_window_says_so(dataset):
    with pytest.raises(pp.PreprocessError, match="split 'validation' gets 24 steps, fewer "
                       "than one window of 30: 300 steps are too few"):
        pp.split(dataset, "time", (0.8, 0.1, 0.1), window=30)
    with pytest.raises(pp.PreprocessError, match="dim='x' is not a dimension"):
        pp.split(dataset, "x")
