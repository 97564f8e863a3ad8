"""Latent walks (stylegan_fast/interpolate.py) and `stylegan-fast interpolate`."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_fast import cli
from stylegan_fast.generate import generate_images, z_from_seed
from stylegan_fast.interpolate import frame_count, latent_path, render_frames, slerp, walk_ws, write_interpolation


def angle(a, b):
    """Angle between the vectors [..., D], in float64; atan2 keeps it precise near 0 and pi."""
    a, b = a.double(), b.double()
    a = a / a.norm(dim=-1, keepdim=True)
    dot = (a * b).sum(-1, keepdim=True)
    return torch.atan2((b - dot * a).norm(dim=-1), dot.squeeze(-1))


def test_slerp_of_unit_vectors_stays_on_the_sphere_at_constant_speed():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 16, generator=generator, dtype=torch.float64)
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    for t in torch.linspace(0, 1, 11, dtype=torch.float64):
        out = slerp(a, b, t)
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close(angle(a, out), t * angle(a, b), rtol=0, atol=1e-12)
        torch.testing.assert_close(angle(out, b), (1 - t) * angle(a, b), rtol=0, atol=1e-12)


def test_slerp_norm_lies_between_the_endpoint_norms_and_endpoints_are_exact():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(4, 8, generator=generator) * torch.tensor([[0.5], [1.0], [3.0], [7.0]])
    b = torch.randn(4, 8, generator=generator) * torch.tensor([[2.0], [0.25], [3.0], [1.0]])
    t = torch.linspace(0, 1, 9).view(9, 1)  # broadcasts against a.shape[:-1] = [4]
    out = slerp(a, b, t)  # [9, 4, 8]
    assert out.shape == (9, 4, 8) and out.dtype == torch.float32
    low, high = torch.minimum(a.norm(dim=-1), b.norm(dim=-1)), torch.maximum(a.norm(dim=-1), b.norm(dim=-1))
    assert ((out.norm(dim=-1) >= low * (1 - 1e-6)) & (out.norm(dim=-1) <= high * (1 + 1e-6))).all()
    assert torch.equal(out[0], a) and torch.equal(out[-1], b)


@pytest.mark.parametrize("scale", [2.5, -1.0, -3.0])
def test_slerp_of_parallel_and_antiparallel_vectors(scale):
    a = torch.tensor([0.6, -0.8, 0.0, 0.0])
    b = scale * a
    t = torch.linspace(0, 1, 7)
    out = slerp(a, b, t)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=-1), 1 + t * (abs(scale) - 1), rtol=1e-6, atol=1e-6)
    expected = t * (math.pi if scale < 0 else 0.0)
    torch.testing.assert_close(angle(a.expand(7, 4), out), expected.double(), rtol=0, atol=1e-6)
    if scale < 0:
        assert abs(float(out[3] @ a)) < 1e-6  # half way round: perpendicular to a


def test_slerp_rejects_zero_and_one_dimensional_vectors():
    with pytest.raises(ValueError, match="zero"):
        slerp(torch.zeros(4), torch.ones(4), 0.5)
    with pytest.raises(ValueError, match="D >= 2"):
        slerp(torch.ones(1), torch.ones(1), 0.5)


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("space", ["z", "w"])
def test_latent_path_counts_frames_and_hits_the_keys(space, loop):
    keys = torch.randn(3, 8) if space == "z" else torch.randn(3, 4, 8)
    path = latent_path(keys, 5, space=space, loop=loop)
    assert len(path) == frame_count(3, 5, loop) == (15 if loop else 11)
    for k in range(3):
        assert torch.equal(path[k * 5], keys[k])
    if space == "w":
        torch.testing.assert_close(path[2], torch.lerp(keys[0], keys[1], 0.4))
        if loop:
            torch.testing.assert_close(path[-1], torch.lerp(keys[2], keys[0], 0.8))
    else:
        torch.testing.assert_close(path[2], slerp(keys[0], keys[1], 0.4))


def test_walk_ws_key_frames_are_the_seeds_ws(G):
    seeds = [4, 9, 1]
    c = torch.zeros([1, 0])
    for space in ("w", "z"):
        ws = walk_ws(G, seeds, 4, space=space, truncation_psi=0.7, batch_size=1)
        assert ws.shape == (frame_count(3, 4, False), G.num_ws, G.w_dim)
        for k, seed in enumerate(seeds):
            assert torch.equal(ws[4 * k], G.mapping(z_from_seed(seed, G.z_dim), c, truncation_psi=0.7)[0])
        assert not torch.equal(ws[1], ws[0]) and not torch.equal(ws[1], ws[4])


def test_walk_ws_truncation_cutoff_reaches_the_mapping(G):
    # Key frames with truncation_psi=0.5 on the first 2 ws: G.mapping's ws with that cutoff, not all truncated.
    seeds = [4, 9]
    c = torch.zeros([1, 0])
    for space in ("w", "z"):
        ws = walk_ws(G, seeds, 3, space=space, truncation_psi=0.5, truncation_cutoff=2, batch_size=1)
        full = walk_ws(G, seeds, 3, space=space, truncation_psi=0.5, batch_size=1)
        for k, seed in enumerate(seeds):
            z = z_from_seed(seed, G.z_dim)
            assert torch.equal(ws[3 * k], G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2)[0])
            assert torch.equal(full[3 * k], G.mapping(z, c, truncation_psi=0.5)[0])
        assert torch.equal(ws[:, 2:], walk_ws(G, seeds, 3, space=space, batch_size=1)[:, 2:])
        assert (ws[:, :2] - full[:, :2]).abs().max() == 0 and (ws[:, 2:] - full[:, 2:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"--trunc-cutoff"):
        walk_ws(G, seeds, 3, truncation_cutoff=-1)


def test_z_and_w_walks_differ_between_the_keys(G):
    w_walk = walk_ws(G, [0, 1], 4, space="w")
    z_walk = walk_ws(G, [0, 1], 4, space="z")
    assert (w_walk[2] - z_walk[2]).abs().max() > 1e-3


def test_render_frames_yields_each_frame_in_order(G):
    ws = walk_ws(G, [0, 1], 3, batch_size=1)
    frames = list(render_frames(G, ws, batch_size=1))
    assert len(frames) == 4
    assert all(frame.dtype == torch.uint8 and frame.shape == (3, 16, 16) for frame in frames)
    for index in range(4):
        (alone,) = render_frames(G, ws[[index]], batch_size=1)
        assert torch.equal(frames[index], alone)
    assert len(list(render_frames(G, ws, batch_size=3))) == 4


@pytest.mark.parametrize("space", ["w", "z"])
def test_written_key_frames_equal_generate(checkpoint, tmp_path, space):
    seeds = [4, 9, 1]
    paths = write_interpolation(checkpoint, seeds, tmp_path / "walk", frames=3, space=space, truncation_psi=0.8,
                                device="cpu", impl="ref", batch_size=1)  # fmt: skip
    assert [path.name for path in paths] == [f"frame{i:05d}.png" for i in range(7)]
    generate_images(checkpoint, seeds, tmp_path / "gen", truncation_psi=0.8, device="cpu", impl="ref")
    for k, seed in enumerate(seeds):
        generated = np.asarray(Image.open(tmp_path / "gen" / f"seed{seed:04d}.png"))
        assert np.array_equal(np.asarray(Image.open(paths[3 * k])), generated)
    assert not np.array_equal(np.asarray(Image.open(paths[1])), np.asarray(Image.open(paths[0])))


def test_written_key_frames_with_a_cutoff_equal_generate(checkpoint, tmp_path):
    seeds = [4, 9]
    paths = write_interpolation(checkpoint, seeds, tmp_path / "walk", frames=2, truncation_psi=0.5, truncation_cutoff=2,
                                device="cpu", impl="ref", batch_size=1)  # fmt: skip
    generate_images(checkpoint, seeds, tmp_path / "gen", truncation_psi=0.5, truncation_cutoff=2, device="cpu", impl="ref")
    generate_images(checkpoint, seeds[:1], tmp_path / "full", truncation_psi=0.5, device="cpu", impl="ref")
    for k, seed in enumerate(seeds):
        generated = np.asarray(Image.open(tmp_path / "gen" / f"seed{seed:04d}.png"))
        assert np.array_equal(np.asarray(Image.open(paths[2 * k])), generated)
    assert not np.array_equal(np.asarray(Image.open(paths[0])), np.asarray(Image.open(tmp_path / "full" / "seed0004.png")))


def test_cli_writes_frames_and_a_gif(checkpoint, tmp_path, capsys):
    outdir = tmp_path / "walk"
    argv = ["interpolate", "--network", str(checkpoint), "--seeds", "0,5", "--frames", "4", "--loop", "--gif",
            "--fps", "25", "--outdir", str(outdir), "--device", "cpu", "--impl", "ref"]  # fmt: skip
    assert cli.main(argv) == 0
    assert "wrote 8 frames and interpolation.gif" in capsys.readouterr().out
    assert sorted(path.name for path in outdir.glob("frame*.png")) == [f"frame{i:05d}.png" for i in range(8)]
    with Image.open(outdir / "interpolation.gif") as gif:
        assert gif.n_frames == frame_count(2, 4, True) == 8
        assert gif.info["duration"] == 40
        assert gif.size == (16, 16)


@pytest.mark.parametrize(
    "seeds, frames, space, match",
    [([3], 4, "w", "at least 2"), ([], 4, "w", "at least 2"), ([1, 2], 0, "w", "frames"), ([1, 2], 4, "x", "space")],
)
def test_bad_arguments_raise(G, seeds, frames, space, match):
    with pytest.raises(ValueError, match=match):
        walk_ws(G, seeds, frames, space=space)


def test_bad_fps_raises_before_any_work(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="fps"):
        write_interpolation(checkpoint, [0, 1], tmp_path / "walk", frames=2, gif=True, fps=0, device="cpu", impl="ref")
    assert not (tmp_path / "walk").exists()


def test_cli_rejects_an_unknown_space(checkpoint, tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["interpolate", "--network", str(checkpoint), "--seeds", "0,1", "--space", "x",
                  "--outdir", str(tmp_path)])  # fmt: skip


def test_cli_writes_an_mp4(checkpoint, tmp_path, capsys):
    import imageio_ffmpeg  # in the test extra

    outdir = tmp_path / "walk"
    argv = ["interpolate", "--network", str(checkpoint), "--seeds", "0,5", "--frames", "4", "--loop", "--mp4", "--gif",
            "--fps", "10", "--outdir", str(outdir), "--device", "cpu", "--impl", "ref"]  # fmt: skip
    assert cli.main(argv) == 0
    assert "wrote 8 frames and interpolation.gif and interpolation.mp4" in capsys.readouterr().out
    reader = imageio_ffmpeg.read_frames(str(outdir / "interpolation.mp4"))
    meta = next(reader)
    frames = [np.frombuffer(frame, dtype=np.uint8).reshape(16, 16, 3) for frame in reader]
    assert meta["size"] == (16, 16) and meta["fps"] == 10 and meta["codec"] == "h264"
    assert len(frames) == 8
    first = np.asarray(Image.open(outdir / "frame00000.png").convert("RGB")).astype(int)
    assert np.abs(frames[0].astype(int) - first).mean() < 12  # lossy, but the same picture


def test_mp4_without_the_video_extra_is_refused_before_any_frame(checkpoint, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "imageio_ffmpeg" else real(name, *a))
    with pytest.raises(ValueError, match=r"--mp4 needs the imageio-ffmpeg package: pip install 'stylegan-fast\[video\]'"):
        write_interpolation(checkpoint, [0, 1], tmp_path / "walk", frames=2, mp4=True, device="cpu", impl="ref")
    assert not (tmp_path / "walk").exists()
