import sys

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_fast.data import open_dataset


def test_faces_are_the_hundred_lfw_faces_at_the_resolution():
    from skimage.data import lfw_subset

    dataset = open_dataset("demo:faces", resolution=32)
    assert len(dataset) == dataset.num_images == 100 and dataset.label_dim == 0
    images = torch.stack([dataset[i][0] for i in range(100)])
    assert images.shape == (100, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])  # gray repeated
    lfw = lfw_subset() * 255  # [200, 25, 25]: faces, then background crops

    def distance(image, reference):  # back to 25x25 and compare
        small = np.asarray(Image.fromarray(image[0].numpy()).resize((25, 25), Image.Resampling.LANCZOS), float)
        return np.abs(small - reference).mean()

    for index in (0, 57, 99):
        assert distance(images[index], lfw[index]) < 8
        assert distance(images[index], lfw[index + 100]) > 20
    assert images.float().std() > 30  # real content, not a flat fill


def test_faces_in_one_channel():
    assert open_dataset("demo:faces", resolution=4, channels=1)[0][0].shape == (1, 4, 4)


def test_textures_are_deterministic_labelled_crops():
    first = open_dataset("demo:textures", resolution=8, cache_bytes=0)
    second = open_dataset("demo:textures", resolution=8, channels=1)
    assert len(first) == 1024 and first.label_dim == 3
    np.testing.assert_array_equal(first.labels, np.arange(1024) % 3)
    for index in (0, 1, 2, 500, 1023):
        image, label = first[index]
        assert image.shape == (3, 8, 8) and label[index % 3] == 1
        assert torch.equal(image[:1], second[index][0])
    assert not torch.equal(first[0][0], first[3][0])  # same texture, another place


def test_demo_refuses_a_labels_file(tmp_path):
    with pytest.raises(ValueError, match="labels: the demo datasets carry their own labels"):
        open_dataset("demo:faces", resolution=8, labels=tmp_path / "x.json")


def test_missing_scikit_image_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match=r"pip install stylegan-fast\[demo\]"):
        open_dataset("demo:faces", resolution=8)
