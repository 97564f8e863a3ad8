"""Dataset preparation (stylegan_fast/data/prepare.py) and `stylegan-fast dataset`."""

import json
import logging
import os
import threading
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_fast import cli
from stylegan_fast.data import open_dataset, transforms
from stylegan_fast.data.prepare import prepare_dataset


def assert_same_dataset(prepared, source):
    """Both datasets yield the same uint8 pixels and one-hot labels, item by item."""
    assert len(prepared) == len(source) > 0
    assert prepared.label_dim == source.label_dim
    for index in range(len(source)):
        (image, label), (expected_image, expected_label) = prepared[index], source[index]
        assert torch.equal(image, expected_image), index
        assert torch.equal(label, expected_label), index


@pytest.fixture
def mixed_folder(tmp_path):
    """Images of several modes and shapes (so cropping, resizing and conversion all act), with labels."""
    rng = np.random.default_rng(3)
    root = tmp_path / "mixed"
    root.mkdir()
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(root / "wide.png")
    Image.fromarray(rng.integers(0, 256, (15, 9), dtype=np.uint8)).save(root / "tall_gray.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)).save(root / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(root / "small.jpg", quality=90)
    palette = Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).quantize(16)
    palette.save(root / "palette.png")
    labels = [["wide.png", 2], ["tall_gray.png", 0], ["rgba.png", 1], ["small.jpg", 2], ["palette.png", 0]]
    (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    return root


@pytest.mark.parametrize("channels", [3, 1])
def test_round_trip_gives_the_sources_pixels_and_labels(mixed_folder, tmp_path, channels):
    dest = tmp_path / "out.zip"
    result = prepare_dataset(mixed_folder, dest, resolution=8, channels=channels, threads=2)
    assert result.written == 5 and result.skipped == [] and result.label_dim == 3
    prepared, source = open_dataset(dest, 8, channels=channels), open_dataset(mixed_folder, 8, channels=channels)
    assert_same_dataset(prepared, source)
    assert source.labels.tolist() == [0, 1, 2, 0, 2]  # sorted: palette, rgba, small, tall_gray, wide

    with zipfile.ZipFile(dest) as archive:
        members = archive.infolist()
        assert [m.filename for m in members] == [f"img/{i:08d}.png" for i in range(5)] + ["dataset.json"]
        assert all(m.compress_type == zipfile.ZIP_STORED for m in members)
        with Image.open(archive.open("img/00000003.png")) as image:
            assert image.size == (8, 8) and image.mode == ("L" if channels == 1 else "RGB")
        document = json.loads(archive.read("dataset.json"))
    assert document["labels"][1] == ["img/00000001.png", 1]


def test_output_does_not_depend_on_threads(mixed_folder, tmp_path):
    prepare_dataset(mixed_folder, tmp_path / "one.zip", resolution=4, threads=1)
    prepare_dataset(mixed_folder, tmp_path / "three.zip", resolution=4, threads=3)
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "three.zip").read_bytes()


def test_images_are_streamed_with_a_bounded_lookahead(tmp_path, build, monkeypatch):
    root = tmp_path / "many"
    root.mkdir()
    for index, image in enumerate(build.pixels(24, seed=5)):
        (root / f"{index:02d}.png").write_bytes(build.png_bytes(image))
    prepare, started, ahead = transforms.prepare_image, [], []

    def counted(*args):
        started.append(1)
        return prepare(*args)

    monkeypatch.setattr(transforms, "prepare_image", counted)
    result = prepare_dataset(root, tmp_path / "out.zip", resolution=8, threads=2,
                             progress=lambda written, planned: ahead.append(len(started) - written))  # fmt: skip
    assert result.written == 24 and len(started) == 24
    assert max(ahead) <= 2 * 2  # at most 2 * threads images decoded ahead of the writer


def test_unreadable_images_are_reported_and_skipped(image_tree, tmp_path, caplog):
    root, _, bad = image_tree
    with caplog.at_level(logging.WARNING, logger="stylegan_fast.data"):
        result = prepare_dataset(root, tmp_path / "out.zip", resolution=8)
    bad_paths = [os.path.join(root, *name.split("/")) for name in bad]
    assert result.written == 4
    assert [path for path, _ in result.skipped] == bad_paths
    messages = [record.getMessage() for record in caplog.records if record.name == "stylegan_fast.data.prepare"]
    for path in bad_paths:
        assert sum(message.startswith("skipping unreadable image") and path in message for message in messages) == 1
    assert sum("skipped 2 images that could not be read; wrote 4" in message for message in messages) == 1
    assert_same_dataset(open_dataset(tmp_path / "out.zip", 8), open_dataset(root, 8))


def test_zip_source_and_max_images_count_only_readable_images(image_zip, tmp_path):
    path, images, _ = image_zip  # entries: a.png, b.PNG, sub/broken.png (bad), sub/c.png, ...
    calls = []
    result = prepare_dataset(path, tmp_path / "out.zip", resolution=8, max_images=3,
                             progress=lambda written, planned: calls.append((written, planned)))  # fmt: skip
    assert result.written == 3 and len(result.skipped) == 1
    assert calls == [(1, 3), (2, 3), (3, 3)]
    prepared = open_dataset(tmp_path / "out.zip", 8)
    for index, name in enumerate(["a.png", "b.PNG", "sub/c.png"]):
        assert np.array_equal(prepared[index][0].numpy(), images[name].transpose(2, 0, 1))


def test_labels_file_is_applied_and_labels_can_be_left_out(image_tree, tmp_path):
    root, _, _ = image_tree
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": [["a.png", 4], ["b.PNG", 1], ["sub/c.png", 0], ["sub/d.png", 3]]}))
    result = prepare_dataset(root, tmp_path / "out.zip", resolution=8, labels=labels)
    assert result.label_dim == 5
    prepared = open_dataset(tmp_path / "out.zip", 8)
    assert prepared.labels.tolist() == [4, 1, 0, 3]
    assert_same_dataset(prepared, open_dataset(root, 8, labels=labels))

    prepare_dataset(root, tmp_path / "bare.zip", resolution=8, labels=False)
    with zipfile.ZipFile(tmp_path / "bare.zip") as archive:
        assert "dataset.json" not in archive.namelist()
    assert open_dataset(tmp_path / "bare.zip", 8).label_dim == 0


def test_skipping_the_largest_class_id_is_logged(image_tree, tmp_path, caplog):
    root, _, _ = image_tree
    labels = tmp_path / "labels.json"
    pairs = [["a.png", 0], ["b.PNG", 1], ["sub/c.png", 0], ["sub/d.png", 1], ["text.png", 6]]  # text.png is unreadable
    labels.write_text(json.dumps({"labels": pairs}))
    with caplog.at_level(logging.WARNING, logger="stylegan_fast.data"):
        result = prepare_dataset(root, tmp_path / "out.zip", resolution=8, labels=labels)
    assert result.label_dim == 2
    assert any("label_dim is 2, not the source's 7" in record.getMessage() for record in caplog.records)


def test_array_labels_become_pairs(tmp_path, build):
    images, ids = build.pixels(5, seed=4), np.array([2, 0, 1, 1, 0])
    np.savez(tmp_path / "data.npz", images=images, labels=ids)
    prepare_dataset(tmp_path / "data.npz", tmp_path / "out.zip", resolution=4)
    assert_same_dataset(open_dataset(tmp_path / "out.zip", 4), open_dataset(tmp_path / "data.npz", 4))
    assert open_dataset(tmp_path / "out.zip", 4).labels.tolist() == ids.tolist()


def test_missing_label_raises_and_writes_nothing(image_tree, tmp_path):
    root, _, _ = image_tree
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": [["a.png", 0], ["b.PNG", 1], ["sub/d.png", 1]]}))
    with pytest.raises(ValueError, match="no label for sub/c.png"):
        prepare_dataset(root, tmp_path / "out" / "data.zip", resolution=8, labels=labels)
    assert os.listdir(tmp_path / "out") == []


def test_interrupted_run_leaves_no_file(image_tree, tmp_path, monkeypatch):
    root, _, _ = image_tree
    prepare = transforms.prepare_image
    lock, calls = threading.Lock(), []

    def interrupted(*args):
        with lock:
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
        return prepare(*args)

    monkeypatch.setattr(transforms, "prepare_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(root, tmp_path / "out" / "data.zip", resolution=8, threads=2)
    assert os.listdir(tmp_path / "out") == []


def test_existing_destination_is_refused_unless_forced(image_tree, tmp_path):
    root, _, _ = image_tree
    dest = tmp_path / "data.zip"
    dest.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError, match="data.zip"):
        prepare_dataset(root, dest, resolution=8)
    assert dest.read_bytes() == b"the user's file"
    prepare_dataset(root, dest, resolution=8, force=True)
    assert len(open_dataset(dest, 8)) == 4


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"resolution": 12}, ValueError, "power of two"),
        ({"resolution": 8, "channels": 2}, ValueError, "channels"),
        ({"resolution": 8, "dest": "out.tar"}, ValueError, r"dest must be a path ending in \.zip"),
        ({"resolution": 8, "max_images": 0}, ValueError, "max_images"),
        ({"resolution": 8, "labels": True}, ValueError, "labels"),
        ({"resolution": 8, "source": "missing"}, FileNotFoundError, "missing"),
    ],
)
def test_bad_arguments_raise(image_tree, tmp_path, kwargs, error, match):
    arguments = {"source": image_tree[0], "dest": "out.zip", **kwargs}
    arguments["dest"] = tmp_path / arguments["dest"]
    arguments["source"] = tmp_path / arguments["source"] if arguments["source"] == "missing" else arguments["source"]
    with pytest.raises(error, match=match):
        prepare_dataset(**arguments)
    assert os.listdir(tmp_path) == ["images"]


def test_cli(mixed_folder, tmp_path, capsys):
    dest = tmp_path / "out.zip"
    base = ["dataset", "--source", str(mixed_folder), "--dest", str(dest), "--resolution", "4"]
    assert cli.main([*base, "--channels", "1", "--max-images", "2"]) == 0
    # The first two images (palette.png, rgba.png) have ids 0 and 1 of the source's 0-2.
    assert f"wrote 2 images at 4x4, labelled (label_dim 2) to {dest}" in capsys.readouterr().out
    assert open_dataset(dest, 4, channels=1).image_shape == (1, 4, 4)
    with pytest.raises(SystemExit) as refused:  # the file exists, and there is no --force
        cli.main(base)
    assert refused.value.code == 2 and "exists" in str(refused.value)
    assert cli.main([*base, "--force", "--no-labels"]) == 0
    assert len(open_dataset(dest, 4)) == 5 and open_dataset(dest, 4).label_dim == 0
    with pytest.raises(SystemExit):
        cli.main([*base, "--force", "--no-labels", "--labels", "labels.json"])
