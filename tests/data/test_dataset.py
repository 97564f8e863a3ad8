import json
import logging
import os

import numpy as np
import pytest
import torch

from stylegan_fast.data import open_dataset


def _warnings(caplog):
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("stylegan_fast.data")
    ]


def _check_bad_files_reported(caplog, bad_paths, total):
    messages = _warnings(caplog)
    per_file = [m for m in messages if m.startswith("skipping unreadable image")]
    assert len(per_file) == len(bad_paths)
    for path in bad_paths:
        assert sum(path in m for m in per_file) == 1, (path, per_file)
    summary = [m for m in messages if "skipped" in m]
    assert summary == [summary[0]] and f"skipped {len(bad_paths)} of {total} images" in summary[0]


@pytest.mark.parametrize("cache_bytes", [1 << 20, 0])
def test_folder_loads_good_images_and_reports_each_bad_one(image_tree, caplog, cache_bytes):
    root, images, bad = image_tree
    with caplog.at_level(logging.WARNING):
        dataset = open_dataset(root, resolution=8, cache_bytes=cache_bytes)
    assert dataset.cached == (cache_bytes > 0)
    assert dataset.image_names == ["a.png", "b.PNG", "sub/c.png", "sub/d.png"]
    assert len(dataset) == dataset.num_images == 4
    _check_bad_files_reported(caplog, [os.path.join(root, *b.split("/")) for b in bad], total=6)
    assert [path for path, _ in dataset.skipped] == [
        os.path.join(root, "sub", "broken.png"),
        os.path.join(root, "text.png"),
    ]
    for index, name in enumerate(dataset.image_names):
        image, label = dataset[index]
        assert image.dtype == torch.uint8 and image.shape == (3, 8, 8)
        np.testing.assert_array_equal(image.numpy(), images[name].transpose(2, 0, 1))
        assert label.shape == (0,) and label.dtype == torch.float32


def test_zip_loads_good_images_and_reports_each_bad_one(image_zip, caplog):
    path, images, bad = image_zip
    with caplog.at_level(logging.WARNING):
        dataset = open_dataset(str(path), resolution=8)
    assert dataset.image_names == ["a.png", "b.PNG", "sub/c.png", "sub/d.png"]  # __MACOSX skipped silently
    _check_bad_files_reported(caplog, [f"{path}/{b}" for b in bad], total=6)
    np.testing.assert_array_equal(dataset[2][0].numpy(), images["sub/c.png"].transpose(2, 0, 1))


def test_other_formats_are_read(tmp_path, build):
    from PIL import Image

    image = build.pixels(1)[0]
    for extension in ("jpg", "jpeg", "webp", "bmp"):
        Image.fromarray(image).save(tmp_path / f"x.{extension}", **({"lossless": True} if extension == "webp" else {}))
    dataset = open_dataset(tmp_path, resolution=8)
    assert dataset.image_names == ["x.bmp", "x.jpeg", "x.jpg", "x.webp"]
    np.testing.assert_array_equal(dataset[0][0].numpy(), image.transpose(2, 0, 1))
    np.testing.assert_array_equal(dataset[3][0].numpy(), image.transpose(2, 0, 1))


def test_all_bad_raises_naming_the_path(tmp_path, build):
    (tmp_path / "x.png").write_bytes(build.TEXT_AS_PNG)
    (tmp_path / "y.png").write_bytes(build.truncated_png())
    with pytest.raises(ValueError, match=f"{tmp_path}.*none of its 2 images could be read"):
        open_dataset(tmp_path, resolution=8)


def test_no_images_raises_naming_the_path(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match=f"{tmp_path}.*no images found"):
        open_dataset(tmp_path, resolution=8)


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ("missing/folder", FileNotFoundError, "spec 'missing/folder': no such file"),
        ("demo:cats", ValueError, "spec 'demo:cats' is not a built-in dataset; known: demo:faces, demo:textures"),
    ],
)
def test_unknown_specs_are_named(spec, error, match):
    with pytest.raises(error, match=match):
        open_dataset(spec, resolution=8)


def test_bad_files_as_specs_are_named(tmp_path, build):
    (tmp_path / "data.tar").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported file type .tar"):
        open_dataset(tmp_path / "data.tar", resolution=8)
    (tmp_path / "data.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="data.zip'?: cannot read the zip file"):
        open_dataset(tmp_path / "data.zip", resolution=8)
    (tmp_path / "data.npz").write_bytes(b"not a npz")
    with pytest.raises(ValueError, match="data.npz'?: cannot read the numpy file"):
        open_dataset(tmp_path / "data.npz", resolution=8)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW", "NHW1"])
def test_array_layouts(tmp_path, build, layout):
    nhwc = build.pixels(5, channels=1 if layout.startswith("NHW") and layout != "NHWC" else 3)
    array = {"NHWC": nhwc, "NCHW": nhwc.transpose(0, 3, 1, 2), "NHW": nhwc[..., 0], "NHW1": nhwc}[layout]
    np.savez(tmp_path / "data.npz", images=array)
    dataset = open_dataset(tmp_path / "data.npz", resolution=8)
    assert len(dataset) == 5
    for index in range(5):
        expected = np.broadcast_to(nhwc[index].transpose(2, 0, 1), (3, 8, 8))
        np.testing.assert_array_equal(dataset[index][0].numpy(), expected)


def test_npy_is_memory_mapped_and_read(tmp_path, build):
    images = build.pixels(3)
    np.save(tmp_path / "data.npy", images)
    dataset = open_dataset(str(tmp_path / "data.npy"), resolution=4, channels=1, cache_bytes=0)
    assert dataset[2][0].shape == (1, 4, 4)


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((2, 3, 4, 4), np.uint8), "ambiguous"),
        (np.zeros((2, 8, 8, 5), np.uint8), "no channel dimension"),
        (np.zeros((2, 8, 8), np.float32), "must be uint8, got float32"),
    ],
)
def test_bad_arrays_are_refused_naming_the_file(tmp_path, array, match):
    np.save(tmp_path / "data.npy", array)
    with pytest.raises(ValueError, match=f"data.npy.*{match}"):
        open_dataset(tmp_path / "data.npy", resolution=8)


def test_resize_crop_and_channels_through_a_dataset(tmp_path, build):
    from PIL import Image

    gray = np.zeros((30, 50), np.uint8)
    gray[:, 10:40] = 200  # the centred 30x30 square
    Image.fromarray(gray).save(tmp_path / "wide.png")
    rgb = open_dataset(tmp_path, resolution=16)
    assert rgb[0][0].shape == (3, 16, 16)
    np.testing.assert_array_equal(rgb[0][0].numpy(), 200)
    (tmp_path / "wide.png").unlink()
    Image.fromarray(np.full((8, 8, 3), (255, 0, 0), np.uint8)).save(tmp_path / "red.png")
    gray_ds = open_dataset(tmp_path, resolution=4, channels=1)
    np.testing.assert_array_equal(gray_ds[0][0].numpy(), np.full((1, 4, 4), 76))


def test_mirror_doubles_and_flips_deterministically(image_tree):
    root, _, _ = image_tree
    plain = open_dataset(root, resolution=8, labels=False)
    mirrored = open_dataset(root, resolution=8, mirror=True, labels=False)
    assert len(mirrored) == 2 * len(plain) == 8
    for index in range(4):
        np.testing.assert_array_equal(mirrored[index][0].numpy(), plain[index][0].numpy())
        np.testing.assert_array_equal(mirrored[4 + index][0].numpy(), plain[index][0].numpy()[:, :, ::-1])
        assert torch.equal(mirrored[4 + index][0], mirrored[4 + index][0])
    assert torch.equal(mirrored[-1][0], mirrored[7][0])
    with pytest.raises(IndexError):
        mirrored[8]


def test_folder_labels_from_dataset_json(image_tree):
    root, _, _ = image_tree
    pairs = [["a.png", 0], ["b.PNG", 4], ["sub/c.png", 1], ["sub/d.png", 1], ["sub/broken.png", 2]]
    (root / "dataset.json").write_text(json.dumps({"labels": pairs}))
    dataset = open_dataset(root, resolution=8, mirror=True)
    assert dataset.label_dim == 5
    np.testing.assert_array_equal(dataset.labels, [0, 4, 1, 1])
    assert torch.equal(dataset[1][1], torch.tensor([0.0, 0, 0, 0, 1]))
    assert torch.equal(dataset[5][1], dataset[1][1])  # the mirrored copy keeps its label
    assert open_dataset(root, resolution=8, labels=False).label_dim == 0
    (root / "dataset.json").write_text(json.dumps({"labels": pairs[:3]}))
    with pytest.raises(ValueError, match=f"labels file {root / 'dataset.json'} has no label for 1 of the images: sub/d.png"):
        open_dataset(root, resolution=8)


def test_explicit_labels_file_and_missing_labels(image_tree, tmp_path):
    root, _, _ = image_tree
    path = tmp_path / "my_labels.json"
    path.write_text(json.dumps({"labels": [["a.png", 1], ["b.PNG", 0], ["sub/c.png", 1]]}))
    with pytest.raises(ValueError, match="my_labels.json has no label for 1 of the images: sub/d.png"):
        open_dataset(root, resolution=8, labels=path)
    path.write_text(json.dumps({"labels": [["a.png", 1], ["b.PNG", 0], ["sub/c.png", 1], ["sub/d.png", 2]]}))
    dataset = open_dataset(root, resolution=8, labels=str(path))
    assert dataset.label_dim == 3
    np.testing.assert_array_equal(dataset.labels, [1, 0, 1, 2])


@pytest.mark.parametrize(
    "document, match",
    [
        ("[1, 2]", 'JSON object with a "labels" key'),
        ('{"labels": [["a.png", -1]]}', "int class id >= 0"),
        ('{"labels": [["a.png", 1.5]]}', "int class id >= 0"),
        ('{"labels": [["a.png", 1], ["a.png", 2]]}', "listed twice"),
        ('{"labels": [1, 0, 2, 3]}', "needs \\[\\["),
        ("{not json", "not valid JSON"),
    ],
)
def test_malformed_labels_files_are_refused(image_tree, tmp_path, document, match):
    root, _, _ = image_tree
    (tmp_path / "labels.json").write_text(document)
    with pytest.raises(ValueError, match=match):
        open_dataset(root, resolution=8, labels=tmp_path / "labels.json")


def test_array_labels_from_npz_and_from_a_json_list(tmp_path, build):
    np.savez(tmp_path / "data.npz", images=build.pixels(3), labels=np.array([2, 0, 1]))
    dataset = open_dataset(tmp_path / "data.npz", resolution=8)
    assert dataset.label_dim == 3
    assert torch.equal(dataset[0][1], torch.tensor([0.0, 0, 1]))
    (tmp_path / "labels.json").write_text('{"labels": [0, 0, 5]}')
    relabelled = open_dataset(tmp_path / "data.npz", resolution=8, labels=tmp_path / "labels.json")
    assert relabelled.label_dim == 6 and relabelled[2][1][5] == 1
    (tmp_path / "labels.json").write_text('{"labels": [0, 0]}')
    with pytest.raises(ValueError, match="2 class ids for 3 array rows"):
        open_dataset(tmp_path / "data.npz", resolution=8, labels=tmp_path / "labels.json")
    (tmp_path / "labels.json").write_text('{"labels": [["0", 1]]}')
    with pytest.raises(ValueError, match="needs a plain list of ids"):
        open_dataset(tmp_path / "data.npz", resolution=8, labels=tmp_path / "labels.json")


def test_zip_labels_inside_the_archive(image_zip, tmp_path):
    import zipfile

    path, _, _ = image_zip
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(
            "dataset.json",
            json.dumps({"labels": [[n, i] for i, n in enumerate(["a.png", "b.PNG", "sub/c.png", "sub/d.png"])]}),
        )
    dataset = open_dataset(path, resolution=8)
    np.testing.assert_array_equal(dataset.labels, [0, 1, 2, 3])
