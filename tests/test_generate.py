"""stylegan-fast generate (stylegan_fast/generate.py): one PNG per seed, in batches."""

import numpy as np
import pytest
from PIL import Image

from stylegan_fast import cli
from stylegan_fast.generate import generate_images


def pixels(path):
    return np.asarray(Image.open(path), dtype=np.int16)


def test_batches_make_the_images_of_one_at_a_time(checkpoint, tmp_path):
    # 5 seeds in batches of 3 (3 + 2) against one per pass: the same files, the same images up
    # to the rounding of the batched convolutions, and not the images of other seeds.
    seeds = [4, 0, 7, 2, 9]
    single = generate_images(checkpoint, seeds, tmp_path / "one", truncation_psi=0.8, device="cpu", impl="ref")
    batched = generate_images(checkpoint, seeds, tmp_path / "three", truncation_psi=0.8, device="cpu", impl="ref",
                              batch=3)  # fmt: skip
    assert [p.name for p in single] == [p.name for p in batched] == [f"seed{s:04d}.png" for s in seeds]
    for a, b in zip(single, batched):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1, a.name
    assert np.abs(pixels(single[0]) - pixels(batched[1])).max() > 10


def test_batch_must_be_positive(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="batch must be an int >= 1, got 0"):
        generate_images(checkpoint, [0], tmp_path, device="cpu", batch=0)
    with pytest.raises(SystemExit) as raised:
        cli.main(["generate", "--network", str(checkpoint), "--outdir", str(tmp_path), "--batch", "0", "--device", "cpu"])
    assert raised.value.code == 2 and "batch must be an int >= 1" in str(raised.value)
