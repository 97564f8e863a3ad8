import itertools

import numpy as np
import pytest
import torch

from stylegan_fast.data import make_loader, open_dataset


def batches(loader, count):
    return [(images.clone(), labels.clone()) for images, labels in itertools.islice(loader, count)]


def assert_same(a, b):
    assert len(a) == len(b)
    for (images_a, labels_a), (images_b, labels_b) in zip(a, b, strict=True):
        assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)


@pytest.fixture
def dataset(tmp_path, build):
    """13 distinct labelled images with mirroring: 26 items, so batches straddle epochs."""
    np.savez(tmp_path / "data.npz", images=build.pixels(13), labels=np.arange(13) % 4)
    return open_dataset(tmp_path / "data.npz", resolution=8, mirror=True)


@pytest.fixture
def zip_dataset(image_zip):
    """A zip read lazily (no cache), so workers reopen the archive and decode."""
    return open_dataset(image_zip[0], resolution=8, mirror=True, cache_bytes=0)


def test_batches_have_the_training_layout(dataset):
    images, labels = next(make_loader(dataset, batch_size=5, seed=0, num_workers=0))
    assert images.shape == (5, 3, 8, 8) and images.dtype == torch.uint8
    assert labels.shape == (5, 4) and labels.dtype == torch.float32
    assert torch.equal(labels.sum(dim=1), torch.ones(5))


def test_defaults_pick_no_workers_for_in_memory_data(dataset, zip_dataset):
    assert make_loader(dataset, 4, seed=0).num_workers == 0
    assert make_loader(zip_dataset, 4, seed=0).num_workers >= 1
    assert make_loader(dataset, 4, seed=0).pin_memory == torch.cuda.is_available()


@pytest.mark.parametrize("which, num_workers", [("dataset", 0), ("zip_dataset", 2)])
def test_resume_from_state_continues_exactly(request, which, num_workers):
    data = request.getfixturevalue(which)
    reference = batches(make_loader(data, 3, seed=7, num_workers=num_workers), 14)
    loader = make_loader(data, 3, seed=7, num_workers=num_workers)
    assert_same(batches(loader, 5), reference[:5])  # workers have prefetched beyond batch 5 by now
    state = loader.state_dict()
    assert_same(batches(loader, 2), reference[5:7])  # state taken mid-stream stays valid
    resumed = make_loader(data, 3, seed=7, num_workers=num_workers)
    resumed.load_state_dict(state)
    assert_same(batches(resumed, 9), reference[5:14])
    loader.load_state_dict(state)  # rewinding a running loader drops its prefetched batches
    assert_same(batches(loader, 3), reference[5:8])


def test_two_ranks_together_see_the_single_process_batches(dataset):
    single = batches(make_loader(dataset, 6, seed=2), 8)
    ranks = [batches(make_loader(dataset, 3, seed=2, rank=r, world_size=2), 8) for r in range(2)]
    for k in range(8):
        images = torch.stack([ranks[0][k][0], ranks[1][k][0]], dim=1).flatten(0, 1)  # interleave r, r + 2, ...
        labels = torch.stack([ranks[0][k][1], ranks[1][k][1]], dim=1).flatten(0, 1)
        assert torch.equal(images, single[k][0]) and torch.equal(labels, single[k][1])


def test_arguments_are_checked(dataset):
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(dataset, 0, seed=0)
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(dataset, 2, seed=0, num_workers=-1)
    with pytest.raises(ValueError, match="rank"):
        make_loader(dataset, 2, seed=0, rank=2, world_size=2)
