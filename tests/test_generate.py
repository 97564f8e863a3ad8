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


def test_truncation_cutoff_gives_the_images_of_the_model(checkpoint, tmp_path):
    # generate --trunc-cutoff: each PNG is G(z, c, truncation_psi, truncation_cutoff) as generate writes
    # images, and the cutoff (2 of the 6 ws) changes them; without one, every ws is truncated.
    import torch

    from stylegan_fast.data import to_uint8
    from stylegan_fast.generate import load_generator, z_from_seed

    G = load_generator(checkpoint, torch.device("cpu"), "ref")
    assert G.num_ws == 6
    seeds = [4, 9]
    cut = generate_images(checkpoint, seeds, tmp_path / "cut", truncation_psi=0.5, truncation_cutoff=2, device="cpu",
                          impl="ref")  # fmt: skip
    full = generate_images(checkpoint, seeds, tmp_path / "full", truncation_psi=0.5, device="cpu", impl="ref")
    c = torch.zeros([1, 0])
    for seed, path, uncut in zip(seeds, cut, full):
        z = z_from_seed(seed, G.z_dim)
        with torch.no_grad():
            expected = to_uint8(G(z, c, truncation_psi=0.5, truncation_cutoff=2, noise_mode="const"))[0]
            everything = to_uint8(G(z, c, truncation_psi=0.5, noise_mode="const"))[0]
        assert np.array_equal(pixels(path), expected.permute(1, 2, 0).numpy())
        assert np.array_equal(pixels(uncut), everything.permute(1, 2, 0).numpy())
        assert np.abs(pixels(path) - pixels(uncut)).max() > 10, path.name


@pytest.mark.parametrize("cutoff", [-1, 2.0, "2", True])
def test_truncation_cutoff_must_be_a_non_negative_int(checkpoint, tmp_path, cutoff):
    with pytest.raises(ValueError, match=r"truncation_cutoff \(--trunc-cutoff\) must be None .* or an int >= 0"):
        generate_images(checkpoint, [0], tmp_path / "out", truncation_cutoff=cutoff, device="cpu", impl="ref")
    assert not (tmp_path / "out").exists()
