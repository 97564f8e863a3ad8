import itertools

import numpy as np
import pytest

from stylegan_fast.data import InfiniteSampler


def take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def test_same_seed_same_stream_other_seed_other_stream():
    assert take(InfiniteSampler(50, seed=3), 200) == take(InfiniteSampler(50, seed=3), 200)
    assert take(InfiniteSampler(50, seed=3), 50) != take(InfiniteSampler(50, seed=4), 50)


def test_each_epoch_is_a_fresh_permutation():
    stream = take(InfiniteSampler(37, seed=0), 37 * 3)
    epochs = [stream[i * 37 : (i + 1) * 37] for i in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(37))
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[0] != list(range(37))


def test_no_shuffle_streams_in_order():
    assert take(InfiniteSampler(5, shuffle=False), 12) == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


@pytest.mark.parametrize("consumed", [0, 7, 37, 100])
def test_resume_from_state_yields_the_identical_continuation(consumed):
    reference = take(InfiniteSampler(37, seed=5), consumed + 90)
    sampler = InfiniteSampler(37, seed=5)
    assert take(sampler, consumed) == reference[:consumed]
    state = sampler.state_dict()
    assert divmod(consumed, 37) == (state["epoch"], state["offset"])
    resumed = InfiniteSampler(37, seed=5)
    resumed.load_state_dict(state)
    assert take(resumed, 90) == reference[consumed:]


@pytest.mark.parametrize("size, world_size, local_batch", [(37, 2, 4), (37, 4, 3), (10, 3, 5), (3, 4, 2)])
def test_ranks_interleave_to_the_single_process_batches(size, world_size, local_batch):
    global_batch = local_batch * world_size
    single = take(InfiniteSampler(size, seed=9), 20 * global_batch)
    ranks = [
        take(InfiniteSampler(size, seed=9, rank=r, world_size=world_size), 20 * local_batch) for r in range(world_size)
    ]
    for k in range(20):
        expected = single[k * global_batch : (k + 1) * global_batch]
        local = [ranks[r][k * local_batch : (k + 1) * local_batch] for r in range(world_size)]
        # Local item j of rank r is global item r + world_size * j of the batch.
        interleaved = np.array(local).T.reshape(-1).tolist()
        assert interleaved == expected
        assert sorted(sum(local, [])) == sorted(expected)


def test_multi_rank_resume_and_resume_on_another_world_size():
    single = take(InfiniteSampler(37, seed=1), 120)
    ranks = [InfiniteSampler(37, seed=1, rank=r, world_size=2) for r in range(2)]
    for sampler in ranks:
        take(sampler, 20)  # 10 global batches of 4
    state = ranks[1].state_dict()
    assert state == ranks[0].state_dict()  # every rank describes the same global position
    resumed = [InfiniteSampler(37, seed=1, rank=r, world_size=4) for r in range(4)]
    for sampler in resumed:
        sampler.load_state_dict(state)
    streams = [take(sampler, 10) for sampler in resumed]
    assert np.array(streams).T.reshape(-1).tolist() == single[40:80]


def test_state_of_another_stream_is_refused():
    state = InfiniteSampler(37, seed=1).state_dict()
    with pytest.raises(ValueError, match="different stream"):
        InfiniteSampler(38, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="missing epoch"):
        InfiniteSampler(37, seed=1).load_state_dict({k: v for k, v in state.items() if k != "epoch"})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 0}, "size must be an int >= 1"),
        ({"size": 4, "rank": 2, "world_size": 2}, "rank must be"),
        ({"size": 4, "seed": -1}, "seed"),
    ],
)
def test_arguments_are_checked(kwargs, match):
    size = kwargs.pop("size")
    with pytest.raises(ValueError, match=match):
        InfiniteSampler(size, **kwargs)
