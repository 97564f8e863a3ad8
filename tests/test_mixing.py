"""Style mixing (stylegan_fast/mixing.py) and `stylegan-fast mix`."""

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_fast import cli
from stylegan_fast.data import to_uint8
from stylegan_fast.generate import generate_images, map_latents, seed_latents, synthesize_batches, z_from_seed
from stylegan_fast.mixing import mix_ws, style_mix, write_style_mix
from stylegan_fast.models import make_networks

ROWS, COLS = [3, 11], [5, 7, 2]  # 2 x 3: a transposed grid would not fit


def direct_image(G, row_seed, col_seed, styles, **truncation):
    """The mixed image computed here from G's parts, one seed at a time."""
    c = torch.zeros([1, 0])
    row_ws = G.mapping(z_from_seed(row_seed, G.z_dim), c, **truncation)
    col_ws = G.mapping(z_from_seed(col_seed, G.z_dim), c, **truncation)
    row_ws[:, styles] = col_ws[:, styles]
    return to_uint8(G.synthesis(row_ws, noise_mode="const"))[0]


def test_cells_equal_synthesis_of_the_mixed_ws(G):
    styles = [0, 2, 3]  # not a contiguous range
    result = style_mix(G, ROWS, COLS, styles, batch_size=1)
    for row in ROWS:
        for col in COLS:
            cell = result.images[(row, col)]
            assert torch.equal(cell, direct_image(G, row, col, styles))
            assert not torch.equal(cell, result.images[(row, row)])
            assert not torch.equal(cell, result.images[(col, col)])


def test_truncation_cutoff_reaches_the_mapping(G):
    # Cells and own images with truncation_psi=0.5 on the first 2 of the 6 ws: those of G.mapping
    # with the same cutoff, and not those of truncating every ws.
    styles = [0, 3]
    truncation = dict(truncation_psi=0.5, truncation_cutoff=2)
    cut = style_mix(G, ROWS, COLS, styles, batch_size=1, **truncation)
    full = style_mix(G, ROWS, COLS, styles, truncation_psi=0.5, batch_size=1)
    for row in ROWS:
        for col in COLS:
            assert torch.equal(cut.images[(row, col)], direct_image(G, row, col, styles, **truncation))
            assert torch.equal(full.images[(row, col)], direct_image(G, row, col, styles, truncation_psi=0.5))
    for seed in ROWS + COLS:
        assert torch.equal(cut.images[(seed, seed)], direct_image(G, seed, seed, styles, **truncation))
    assert (cut.grid.int() - full.grid.int()).abs().max() > 10


def test_map_latents_truncation_cutoff(G):
    z = seed_latents(G, [4, 8])
    c = torch.zeros([2, 0])
    plain = map_latents(G, z, truncation_psi=1.0)
    cut = map_latents(G, z, truncation_psi=0.5, truncation_cutoff=2, batch_size=2)
    assert torch.equal(cut, G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2))
    assert torch.equal(cut[:, 2:], plain[:, 2:]) and not torch.equal(cut[:, :2], plain[:, :2])
    every = map_latents(G, z, truncation_psi=0.5, batch_size=2)
    assert torch.equal(map_latents(G, z, truncation_psi=0.5, truncation_cutoff=G.num_ws, batch_size=2), every)
    assert torch.equal(map_latents(G, z, truncation_psi=0.5, truncation_cutoff=0, batch_size=2), plain)
    with pytest.raises(ValueError, match=r"truncation_cutoff \(--trunc-cutoff\) must be .* an int >= 0.*got -1"):
        map_latents(G, z, truncation_psi=0.5, truncation_cutoff=-1)


def test_all_styles_give_the_column_image(G):
    every = list(range(G.num_ws))
    # One image per call: a batch's rows may be computed by different matmul kernels.
    result = style_mix(G, ROWS, COLS, every, batch_size=1)
    for row in ROWS:
        for col in COLS:
            assert torch.equal(result.images[(row, col)], result.images[(col, col)])
    assert not torch.equal(result.images[(ROWS[0], ROWS[0])], result.images[(COLS[0], COLS[0])])


def test_grid_layout(G):
    result = style_mix(G, ROWS, COLS, [1, 4], batch_size=3)
    H = W = G.img_resolution
    assert result.grid.shape == (G.img_channels, (1 + len(ROWS)) * H, (1 + len(COLS)) * W)
    assert result.grid.dtype == torch.uint8

    def block(i, j):
        return result.grid[:, i * H : (i + 1) * H, j * W : (j + 1) * W]

    assert not block(0, 0).any()
    for j, col in enumerate(COLS, 1):
        assert torch.equal(block(0, j), result.images[(col, col)])
    for i, row in enumerate(ROWS, 1):
        assert torch.equal(block(i, 0), result.images[(row, row)])
        for j, col in enumerate(COLS, 1):
            assert torch.equal(block(i, j), result.images[(row, col)])
    assert len(result.images) == len(ROWS) * len(COLS) + len(set(ROWS + COLS))


def test_mix_ws_takes_the_listed_indices_from_the_column():
    row_ws, col_ws = torch.randn(2, 5, 4), torch.randn(3, 5, 4)
    mixed = mix_ws(row_ws, col_ws, [1, 3])
    assert mixed.shape == (2, 3, 5, 4)
    for i in range(2):
        for j in range(3):
            assert torch.equal(mixed[i, j, [1, 3]], col_ws[j, [1, 3]])
            assert torch.equal(mixed[i, j, [0, 2, 4]], row_ws[i, [0, 2, 4]])


def test_batching_keeps_order_and_values(G):
    z = seed_latents(G, [4, 8, 15, 16, 23])
    ws_one = map_latents(G, z, batch_size=1)
    ws_batched = map_latents(G, z, batch_size=2)
    torch.testing.assert_close(ws_batched, ws_one, rtol=1e-5, atol=1e-5)
    one = torch.cat(list(synthesize_batches(G, ws_one, batch_size=1)))
    batched = torch.cat(list(synthesize_batches(G, ws_one, batch_size=3)))
    assert batched.shape == (5, G.img_channels, G.img_resolution, G.img_resolution)
    torch.testing.assert_close(batched, one, rtol=1e-5, atol=1e-5)


def test_conditional_network_uses_the_class():
    torch.manual_seed(2)
    G, _ = make_networks("small", 16, c_dim=3, impl="ref")
    G.eval()
    first = style_mix(G, [1], [2], [0], class_idx=0).grid
    second = style_mix(G, [1], [2], [0], class_idx=2).grid
    assert not torch.equal(first, second)
    with pytest.raises(ValueError, match="class_idx"):
        style_mix(G, [1], [2], [0])


@pytest.mark.parametrize(
    "rows, cols, styles, match",
    [
        ([1], [2], [6], r"styles must be ws indices in \[0, 6\)"),
        ([1], [2], [-1], "styles"),
        ([1], [2], [], "styles"),
        ([], [2], [0], "row_seeds"),
        ([1], [], [0], "col_seeds"),
    ],
)
def test_bad_arguments_raise(G, rows, cols, styles, match):
    assert G.num_ws == 6  # the range in the first message
    with pytest.raises(ValueError, match=match):
        style_mix(G, rows, cols, styles)


def test_cli_writes_grid_and_images_like_generate(checkpoint, tmp_path, capsys):
    outdir = tmp_path / "mix"
    argv = ["mix", "--network", str(checkpoint), "--rows", "3,11", "--cols", "5,7", "--styles", "0-2",
            "--outdir", str(outdir), "--device", "cpu", "--impl", "ref", "--batch", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    assert "grid.png" in capsys.readouterr().out
    names = {"grid.png", "3-5.png", "3-7.png", "11-5.png", "11-7.png", "3-3.png", "11-11.png", "5-5.png", "7-7.png"}
    assert {path.name for path in outdir.iterdir()} == names
    grid = np.asarray(Image.open(outdir / "grid.png"))
    assert grid.shape == (3 * 16, 3 * 16, 3)
    assert np.array_equal(grid[16:32, 32:48], np.asarray(Image.open(outdir / "3-7.png")))

    generate_images(checkpoint, [3, 5], tmp_path / "gen", device="cpu", impl="ref")
    for seed in (3, 5):
        generated = np.asarray(Image.open(tmp_path / "gen" / f"seed{seed:04d}.png"))
        assert np.array_equal(np.asarray(Image.open(outdir / f"{seed}-{seed}.png")), generated)


def test_written_images_with_a_cutoff_equal_generate(checkpoint, tmp_path):
    outdir = tmp_path / "mix"
    write_style_mix(checkpoint, [3], [5], [0, 1], outdir, truncation_psi=0.5, truncation_cutoff=2, device="cpu",
                    impl="ref", batch_size=1)  # fmt: skip
    generate_images(checkpoint, [3, 5], tmp_path / "gen", truncation_psi=0.5, truncation_cutoff=2, device="cpu", impl="ref")
    generate_images(checkpoint, [3], tmp_path / "full", truncation_psi=0.5, device="cpu", impl="ref")
    for seed in (3, 5):
        generated = np.asarray(Image.open(tmp_path / "gen" / f"seed{seed:04d}.png"))
        assert np.array_equal(np.asarray(Image.open(outdir / f"{seed}-{seed}.png")), generated)
    uncut = np.asarray(Image.open(tmp_path / "full" / "seed0003.png"))
    assert not np.array_equal(np.asarray(Image.open(outdir / "3-3.png")), uncut)


def test_cli_rejects_styles_beyond_the_network(checkpoint, tmp_path, capsys):
    argv = ["mix", "--network", str(checkpoint), "--rows", "1", "--cols", "2", "--styles", "0-6",
            "--outdir", str(tmp_path), "--device", "cpu", "--impl", "ref"]  # fmt: skip
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    assert capsys.readouterr().err.startswith("stylegan-fast mix: error: styles must be ws indices in [0, 6)")
    with pytest.raises(SystemExit):
        cli.main([*argv[:6], "--styles", "a-b", *argv[8:]])
