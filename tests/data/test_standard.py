"""Benchmark datasets in their publishers' files: CIFAR-10, MNIST (standard.py) and LMDB (sources.py)."""

import gzip
import io
import json
import pickle
import pickletools
import struct
import sys
import tarfile
import threading
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_fast.data import open_dataset
from stylegan_fast.data.dataset import open_source
from stylegan_fast.data.prepare import prepare_dataset

CIFAR_BATCH = 3  # images per fake batch (the real ones hold 10,000)


# --- Python 2 pickles -------------------------------------------------------------------


class Global:
    """A module-level name, written with the GLOBAL opcode."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class Reduce:
    """func(*args), written as func, args, REDUCE."""

    def __init__(self, func: Global, args: tuple):
        self.func, self.args = func, args


class Built:
    """obj, then its state and BUILD (obj.__setstate__(state))."""

    def __init__(self, obj, state):
        self.obj, self.state = obj, state


def py2_array(array: np.ndarray) -> Built:
    """A uint8 array as numpy reduced it under Python 2."""
    assert array.dtype == np.uint8 and array.flags.c_contiguous
    dtype = Built(Reduce(Global("numpy", "dtype"), (b"u1", 0, 1)), (3, b"|", None, None, None, -1, -1, 0))
    empty = Reduce(Global("numpy.core.multiarray", "_reconstruct"), (Global("numpy", "ndarray"), (0,), b"b"))
    return Built(empty, (1, array.shape, dtype, False, array.tobytes()))


def py2_pickle(value) -> bytes:
    """`value` as Python 2's cPickle wrote it at protocol 2 (bytes stand for Python 2's str).

    Python 3 writes bytes as _codecs.encode calls; Python 2 wrote str with SHORT_BINSTRING /
    BINSTRING. Ints use BININT1 / BININT2 / BININT, bools NEWTRUE / NEWFALSE; containers and
    strings are memoized with BINPUT as cPickle did. A uint8 numpy array is written as numpy
    reduced it under Python 2: _reconstruct(ndarray, (0,), 'b'), then BUILD with
    (1, shape, dtype, is_fortran, data as str); its dtype as dtype('u1', 0, 1), then BUILD
    with (3, '|', None, None, None, -1, -1, 0).
    """
    out = bytearray(b"\x80\x02")  # PROTO 2
    memo = [0]

    def put():
        out.extend(b"q" + bytes([memo[0]]) if memo[0] < 256 else b"r" + struct.pack("<I", memo[0]))
        memo[0] += 1

    def write(item):
        if item is None:
            out.extend(b"N")
        elif isinstance(item, bool):
            out.extend(b"\x88" if item else b"\x89")  # NEWTRUE / NEWFALSE
        elif isinstance(item, int):
            if 0 <= item < 256:
                out.extend(b"K" + bytes([item]))  # BININT1
            elif 0 <= item < 65536:
                out.extend(b"M" + struct.pack("<H", item))  # BININT2
            else:
                out.extend(b"J" + struct.pack("<i", item))  # BININT
        elif isinstance(item, bytes):
            short = len(item) < 256
            out.extend((b"U" + bytes([len(item)]) if short else b"T" + struct.pack("<i", len(item))) + item)
            put()
        elif isinstance(item, str):
            encoded = item.encode("utf-8")
            out.extend(b"X" + struct.pack("<I", len(encoded)) + encoded)  # BINUNICODE
            put()
        elif isinstance(item, tuple):
            if not item:
                out.extend(b")")
            elif len(item) <= 3:
                for element in item:
                    write(element)
                out.extend({1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(item)])  # TUPLE1..3
            else:
                out.extend(b"(")  # MARK
                for element in item:
                    write(element)
                out.extend(b"t")  # TUPLE
            put()
        elif isinstance(item, list):
            out.extend(b"]")  # EMPTY_LIST
            put()
            if item:
                out.extend(b"(")
                for element in item:
                    write(element)
                out.extend(b"e")  # APPENDS
        elif isinstance(item, dict):
            out.extend(b"}")  # EMPTY_DICT
            put()
            if item:
                out.extend(b"(")
                for key, element in item.items():
                    write(key)
                    write(element)
                out.extend(b"u")  # SETITEMS
        elif isinstance(item, Global):
            out.extend(f"c{item.module}\n{item.name}\n".encode("ascii"))
            put()
        elif isinstance(item, Reduce):
            write(item.func)
            write(item.args)
            out.extend(b"R")
            put()
        elif isinstance(item, Built):
            write(item.obj)
            write(item.state)
            out.extend(b"b")  # BUILD
        elif isinstance(item, np.ndarray):
            write(py2_array(item))
        else:
            raise TypeError(type(item))

    write(value)
    out.extend(b".")  # STOP
    return bytes(out)


def test_py2_pickle_is_what_python2_wrote():
    array = np.random.default_rng(0).integers(0, 256, (2, 300), dtype=np.uint8)  # 600 bytes: BINSTRING
    document = {b"data": array, b"labels": [0, 9, 300, 70000], b"name": b"batch", b"flag": True, b"none": None}
    data = py2_pickle(document)
    pickletools.dis(data, out=io.StringIO())  # well formed
    assert data.startswith(b"\x80\x02}") and b"U\x04data" in data and b"T\x58\x02\x00\x00" in data
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data and b"_codecs" not in data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy >= 2 maps numpy.core to numpy._core
        loaded = pickle.loads(data, encoding="bytes")
    assert set(loaded) == set(document)
    assert loaded[b"data"].dtype == np.uint8 and loaded[b"data"].shape == (2, 300)
    np.testing.assert_array_equal(loaded[b"data"], array)
    assert loaded[b"labels"] == [0, 9, 300, 70000] and loaded[b"name"] == b"batch"
    assert loaded[b"flag"] is True and loaded[b"none"] is None


# --- CIFAR-10 ---------------------------------------------------------------------------

CIFAR_CLASSES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
# The order of the members in the published archive (not sorted).
CIFAR_TAR_ORDER = ["data_batch_4", "readme.html", "test_batch", "data_batch_3", "batches.meta", "data_batch_2",
                   "data_batch_5", "data_batch_1"]  # fmt: skip


def cifar_batch(data: np.ndarray, labels: list, number: int) -> bytes:
    return py2_pickle(
        {
            b"batch_label": f"training batch {number} of 5".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"image_{number}_{row}.png".encode() for row in range(len(data))],
        }
    )


def write_cifar(root, batches, **replaced):
    """cifar-10-batches-py/ and cifar-10-python.tar.gz under `root`, as published; `replaced` swaps members."""
    members = {f"data_batch_{n}": cifar_batch(data, labels, n) for n, (data, labels) in enumerate(batches, 1)}
    members["test_batch"] = cifar_batch(*batches[0], 0)
    members["batches.meta"] = py2_pickle(
        {b"num_cases_per_batch": CIFAR_BATCH, b"label_names": CIFAR_CLASSES, b"num_vis": 3072}
    )
    members["readme.html"] = b"<html>CIFAR-10</html>"
    members.update(replaced)
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in members.items():
        (folder / name).write_bytes(data)
    tarball = root / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(folder, arcname=folder.name, recursive=False)
        for name in CIFAR_TAR_ORDER:
            archive.add(folder / name, arcname=f"{folder.name}/{name}")
    return folder, tarball


@pytest.fixture
def cifar(tmp_path):
    """(folder, tarball, images uint8 [15, 3, 32, 32], labels) of a fake CIFAR-10 with 5 batches of 3."""
    rng = np.random.default_rng(7)
    batches = [(rng.integers(0, 256, (CIFAR_BATCH, 3072), dtype=np.uint8), rng.integers(0, 10, CIFAR_BATCH).tolist())
               for _ in range(5)]  # fmt: skip
    batches[4][1][-1] = 9  # so that label_dim is 10
    folder, tarball = write_cifar(tmp_path, batches)
    images = np.concatenate([data for data, _ in batches]).reshape(-1, 3, 32, 32)  # the R, G, B planes
    return folder, tarball, images, [label for _, labels in batches for label in labels]


@pytest.mark.parametrize("form", ["folder", "tarball"])
def test_cifar10_images_and_labels(cifar, form):
    folder, tarball, images, labels = cifar
    spec = folder if form == "folder" else tarball
    source = open_source(spec)
    assert len(source) == 15 and source.names == [str(row) for row in range(15)]
    assert source.builtin_labels()[0] == labels
    np.testing.assert_array_equal(source.load(4), images[4].transpose(1, 2, 0))
    dataset = open_dataset(spec, resolution=32)
    assert dataset.num_images == 15 and dataset.label_dim == 10 and dataset.skipped == []
    assert dataset.labels.tolist() == labels
    for row in range(15):
        image, onehot = dataset[row]
        np.testing.assert_array_equal(image.numpy(), images[row])
        assert torch.equal(onehot, torch.nn.functional.one_hot(torch.tensor(labels[row]), 10).float())
    assert open_dataset(spec, resolution=32, labels=False).label_dim == 0


def test_cifar10_prepared_zip_keeps_pixels_and_labels(cifar, tmp_path):
    _, tarball, images, labels = cifar
    result = prepare_dataset(tarball, tmp_path / "cifar10.zip", resolution=32, threads=2)
    assert result.written == 15 and result.label_dim == 10
    with zipfile.ZipFile(result.dest) as archive:
        document = json.loads(archive.read("dataset.json"))
    assert document["labels"] == [[f"img/{row:08d}.png", label] for row, label in enumerate(labels)]
    prepared = open_dataset(result.dest, resolution=32)
    assert prepared.labels.tolist() == labels
    for row in (0, 7, 14):
        np.testing.assert_array_equal(prepared[row][0].numpy(), images[row])


def test_cifar10_batch_errors_name_the_file(cifar, tmp_path):
    folder, _, _, _ = cifar
    data, narrow = np.zeros((CIFAR_BATCH, 3072), np.uint8), np.zeros((CIFAR_BATCH, 100), np.uint8)
    cases = [
        (cifar_batch(narrow, [0, 1, 2], 2), r"'data' must be a uint8 array \[N, 3072\], got uint8 \(3, 100\)"),
        (cifar_batch(data, [0, 10, 1], 2), "class ids must be 0-9, found 10"),
        (cifar_batch(data, [0, 1], 2), "has 3 images but 2 labels"),
        (py2_pickle({b"labels": [0, 1, 2]}), "has no 'data' entry"),
        (py2_pickle([1, 2]), "holds a list, expected a dict"),
        (cifar_batch(data, [0, 1, 2], 2)[:-100], "is not a readable pickle: .*truncated"),
    ]  # fmt: skip
    for payload, match in cases:
        (folder / "data_batch_2").write_bytes(payload)
        with pytest.raises(ValueError, match=f"{folder / 'data_batch_2'}.*{match}"):
            open_source(folder)


def test_cifar10_pickle_with_a_disallowed_global_is_refused_not_run(tmp_path):
    marker = tmp_path / "was_run"
    payload = py2_pickle({b"data": Reduce(Global("os", "mkdir"), (str(marker),)), b"labels": [0]})
    pickle.loads(payload, encoding="bytes")  # a general unpickler runs it: the payload is live
    assert marker.is_dir()
    marker.rmdir()
    good = (np.zeros((CIFAR_BATCH, 3072), np.uint8), [0, 1, 2])
    root = tmp_path / "data"
    root.mkdir()
    folder, tarball = write_cifar(root, [good] * 5, data_batch_3=payload)
    for spec in (folder, tarball):
        with pytest.raises(ValueError, match="data_batch_3 was refused: refusing to load global 'os.mkdir'"):
            open_source(spec)
        assert not marker.exists()


def test_tarballs_other_than_cifar10_are_refused(tmp_path, build):
    other = tmp_path / "images.tar.gz"
    with tarfile.open(other, "w:gz") as archive:
        png = build.png_bytes(build.pixels(1)[0])
        info = tarfile.TarInfo("images/a.png")
        info.size = len(png)
        archive.addfile(info, io.BytesIO(png))
    with pytest.raises(ValueError, match=r"images.tar.gz'?: a .tar.gz is read only as CIFAR-10 .*and this one is not; "
                                         r"expected .*MNIST.*LMDB"):  # fmt: skip
        open_source(other)
    (tmp_path / "broken.tgz").write_bytes(b"not gzip data")
    with pytest.raises(ValueError, match="broken.tgz'?: cannot read the .tar.gz file"):
        open_source(tmp_path / "broken.tgz")
    (tmp_path / "data.tar").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported file type .tar; expected .*CIFAR-10.*MNIST.*LMDB"):
        open_source(tmp_path / "data.tar")


# --- MNIST ------------------------------------------------------------------------------


def idx_images(images: np.ndarray, magic: int = 0x803) -> bytes:
    return struct.pack(">IIII", magic, *images.shape) + images.tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()


def write_mnist(folder, images, labels, prefix="train", gz=True, dot="-"):
    folder.mkdir(exist_ok=True)
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else bytes
    (folder / f"{prefix}-images{dot}idx3-ubyte{suffix}").write_bytes(pack(idx_images(images)))
    (folder / f"{prefix}-labels{dot}idx1-ubyte{suffix}").write_bytes(pack(idx_labels(labels)))
    return folder / f"{prefix}-images{dot}idx3-ubyte{suffix}"


@pytest.fixture
def digits():
    rng = np.random.default_rng(3)
    return rng.integers(1, 256, (5, 28, 28), dtype=np.uint8), np.array([5, 0, 4, 1, 9])


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("by", ["folder", "file"])
def test_mnist_is_padded_to_32_with_labels(tmp_path, digits, gz, by):
    images, labels = digits
    images_file = write_mnist(tmp_path / "mnist", images, labels, gz=gz)
    dataset = open_dataset(tmp_path / "mnist" if by == "folder" else images_file, resolution=32, channels=1)
    assert dataset.num_images == 5 and dataset.label_dim == 10 and dataset.labels.tolist() == labels.tolist()
    for row in range(5):
        image, onehot = dataset[row]
        assert image.shape == (1, 32, 32)
        expected = np.zeros((32, 32), np.uint8)
        expected[2:30, 2:30] = images[row]
        np.testing.assert_array_equal(image[0].numpy(), expected)
        assert onehot.argmax() == labels[row]
    assert open_dataset(tmp_path / "mnist", resolution=32)[0][0].shape == (3, 32, 32)  # gray repeated


def test_mnist_test_set_and_dotted_names(tmp_path, digits):
    images, labels = digits
    write_mnist(tmp_path / "a", images, labels)
    test_images = write_mnist(tmp_path / "a", images[:2], labels[:2], prefix="t10k", gz=False)
    assert open_dataset(test_images, resolution=32, channels=1).labels.tolist() == [5, 0]
    assert open_dataset(tmp_path / "a", resolution=32, channels=1).num_images == 5  # the folder means train
    dotted = write_mnist(tmp_path / "b", images, labels, dot=".")  # train-images.idx3-ubyte.gz
    np.testing.assert_array_equal(open_source(dotted).load(3)[2:30, 2:30], images[3])


def test_mnist_errors(tmp_path, digits):
    images, labels = digits
    images_file = write_mnist(tmp_path / "m", images, labels, gz=False)
    images_file.write_bytes(idx_images(images, magic=0x802))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte has the magic number 0x00000802, expected 0x00000803"):
        open_source(tmp_path / "m")
    images_file.write_bytes(idx_images(images)[:-1])
    with pytest.raises(ValueError, match="holds 3919 bytes after its header, expected 3920"):
        open_source(images_file)
    images_file.write_bytes(idx_images(images[:4]))
    with pytest.raises(ValueError, match="holds 4 images but .*train-labels-idx1-ubyte 5 labels"):
        open_source(images_file)
    (tmp_path / "m" / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match=r"no labels file beside them \(looked for train-labels-idx1-ubyte\[.gz\]\)"):
        open_source(images_file)
    (tmp_path / "m" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_labels(labels))[:-8])
    with pytest.raises(ValueError, match="cannot read MNIST labels .*train-labels-idx1-ubyte.gz"):
        open_source(images_file)


# --- LMDB (LSUN) ------------------------------------------------------------------------


def encoded(image: np.ndarray, format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format, **({"lossless": True} if format == "WEBP" else {}))
    return buffer.getvalue()


@pytest.fixture
def lsun(tmp_path, build):
    """An LMDB folder of 4 encoded images, written out of key order; (path, {key: image})."""
    lmdb = pytest.importorskip("lmdb")
    images = dict(zip([b"c3", b"a1", b"\xff\x00z", b"b2"], build.pixels(4, seed=9), strict=True))
    path = tmp_path / "church_outdoor_train_lmdb"
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as transaction:
        for number, (key, image) in enumerate(images.items()):
            transaction.put(key, encoded(image, "WEBP" if number % 2 else "PNG"))
    env.close()
    return path, images


def test_lmdb_entries_in_key_order(lsun):
    path, images = lsun
    source = open_source(path)
    keys = sorted(images)
    assert source.names == [key.decode("latin-1") for key in keys] == ["a1", "b2", "c3", "\xff\x00z"]
    assert source.describe(1) == f"{path}[b2]" and source.builtin_labels() == (None, None)
    dataset = open_dataset(path, resolution=8, cache_bytes=0)
    assert dataset.image_names == source.names and dataset.label_dim == 0
    for row, key in enumerate(keys):
        np.testing.assert_array_equal(dataset[row][0].numpy(), images[key].transpose(2, 0, 1))
    labels = [[name, row % 2] for row, name in enumerate(source.names)]
    (path.parent / "labels.json").write_text(json.dumps({"labels": labels}))
    assert open_dataset(path, resolution=8, labels=path.parent / "labels.json").labels.tolist() == [0, 1, 0, 1]


def test_lmdb_is_read_from_threads_and_worker_processes(lsun):
    path, images = lsun
    dataset = open_dataset(path, resolution=8, cache_bytes=0)
    expected = [torch.from_numpy(images[key].transpose(2, 0, 1)) for key in sorted(images)]
    failures = []

    def read(offset):
        for step in range(40):
            row = (offset + step) % 4
            if not torch.equal(dataset[row][0], expected[row]):
                failures.append(row)

    threads = [threading.Thread(target=read, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    copy = pickle.loads(pickle.dumps(dataset))  # as sent to a spawned worker: reopens on first use
    assert torch.equal(copy[3][0], expected[3])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)  # forked workers
    assert torch.equal(torch.cat([batch for batch, _ in loader]), torch.stack(expected))


def test_lmdb_errors(tmp_path, monkeypatch):
    pytest.importorskip("lmdb")
    broken = tmp_path / "broken_lmdb"
    broken.mkdir()
    (broken / "data.mdb").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="broken_lmdb'?: cannot open the LMDB database"):
        open_source(broken)
    monkeypatch.setitem(sys.modules, "lmdb", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"broken_lmdb'? is an LMDB database .*pip install lmdb"):
        open_source(broken)
