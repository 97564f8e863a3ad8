"""Projection of images into a generator's latent space (stylegan_fast/project.py), and
rendering a saved projection (generate --projected-w)."""

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_fast import cli
from stylegan_fast.generate import const_noise, load_projected_w, noise_buffers, synthesize
from stylegan_fast.models import make_networks, save_networks
from stylegan_fast.project import (
    learning_rate_at,
    load_target,
    noise_regularization,
    project,
    project_file,
    w_noise_scale,
)

STEPS = 40


def _tiny_generator(seed=0, cfg="small", **kwargs):
    torch.manual_seed(seed)
    G, D = make_networks(cfg, 16, impl="ref", **kwargs)
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.3)  # Fresh layers add no noise; make the maps matter.
    return G.eval(), D


@pytest.fixture(scope="module")
def G():
    return _tiny_generator()[0]


@pytest.fixture(scope="module")
def target(G):
    z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return G.synthesis(G.mapping(z, None), noise_mode="const")


@pytest.fixture(scope="module")
def projected(G, target):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    buffers = noise_buffers(G)
    result = project(G, target, distance="mse", num_steps=STEPS, w_avg_samples=500)
    return result, before, buffers


def test_schedules():
    assert learning_rate_at(0.0, 0.1) == 0
    assert learning_rate_at(0.025, 0.1) == pytest.approx(0.05)
    assert learning_rate_at(0.5, 0.1) == pytest.approx(0.1)
    assert learning_rate_at(0.875, 0.1) == pytest.approx(0.05)  # Half-way down the cosine.
    assert learning_rate_at(0.999, 0.1) < 1e-5
    assert w_noise_scale(0.0, 2.0) == pytest.approx(0.1)
    assert w_noise_scale(0.375, 2.0) == pytest.approx(0.1 * 0.25)
    assert w_noise_scale(0.75, 2.0) == 0 and w_noise_scale(0.9, 2.0) == 0


def test_noise_regularization_on_known_maps():
    checker = torch.tensor([[(-1.0) ** (i + j) for j in range(16)] for i in range(16)])
    # 16x16: x and y shifts correlate -1 each; its 8x8 average is zero.
    assert noise_regularization([checker]).item() == pytest.approx(2)
    # A constant map correlates +1 at 16x16 and at 8x8.
    assert noise_regularization([torch.ones(16, 16)]).item() == pytest.approx(4)
    # 4x4 maps have only their own scale; maps add up.
    assert noise_regularization([torch.ones(4, 4), checker]).item() == pytest.approx(4)


def test_distance_falls_on_a_generated_target(G, target, projected):
    result, _, _ = projected
    assert len(result.distances) == STEPS
    assert result.distances[-1] < 0.2 * result.distances[0]
    assert np.mean(result.distances[-5:]) < np.mean(result.distances[5:10])
    # The result (ws and noise maps together) reproduces the image of the last steps, where
    # the learning rate is near zero and w carries no exploration noise.
    with torch.no_grad():
        final = (synthesize(G, result.ws, result.noise) - target).square().mean().item()
    assert final == pytest.approx(result.distances[-1], rel=0.05)


def test_plain_w_is_shared_and_w_plus_is_per_layer(G, target, projected):
    result, _, _ = projected
    assert result.ws.shape == (1, G.num_ws, G.w_dim) and result.ws.dtype == torch.float32
    assert torch.equal(result.ws, result.ws[:, :1].expand_as(result.ws))
    plus = project(G, target, distance="mse", num_steps=10, w_plus=True, w_avg_samples=500)
    rows = plus.ws[0]
    assert all(not torch.equal(rows[i], rows[j]) for i in range(G.num_ws) for j in range(i))


def test_noise_maps_are_renormalised_and_optimised(projected):
    result, before, buffers = projected
    assert set(result.noise) == set(buffers)
    for name, noise in result.noise.items():
        assert noise.shape == buffers[name].shape
        assert abs(noise.mean().item()) < 1e-5
        assert noise.square().mean().item() == pytest.approx(1, abs=1e-5)
        assert not torch.allclose(noise, before[name])


def test_the_generator_is_left_unchanged(G, projected):
    _, before, buffers = projected
    after = G.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(noise_buffers(G)[name] is buf for name, buf in buffers.items())
    assert all(p.grad is None for p in G.parameters())


def test_const_noise_feeds_the_maps_to_synthesis(G, projected):
    result, _, _ = projected
    ws = result.ws
    twin = copy.deepcopy(G)
    with torch.no_grad():
        for name, buf in noise_buffers(twin).items():
            buf.copy_(result.noise[name])
        expected = twin.synthesis(ws, noise_mode="const")
        torch.testing.assert_close(synthesize(G, ws, result.noise), expected, rtol=0, atol=0)
        assert not torch.equal(G.synthesis(ws, noise_mode="const"), expected)
    with pytest.raises(ValueError, match="not a noise buffer"):
        with const_noise(G, {"synthesis.b4.const": torch.zeros(4, 4)}):
            pass


def test_seeded_and_deterministic(G, target):
    runs = [project(G, target, distance="mse", num_steps=5, seed=s, w_avg_samples=200) for s in (3, 3, 4)]
    assert torch.equal(runs[0].ws, runs[1].ws) and runs[0].distances == runs[1].distances
    assert not torch.equal(runs[0].ws, runs[2].ws)


def test_bad_arguments(G, target):
    with pytest.raises(ValueError, match=r"target must have shape \[1, 3, 16, 16\]"):
        project(G, target[0], distance="mse", num_steps=2)
    with pytest.raises(ValueError, match="distance must be"):
        project(G, target, distance="l1", num_steps=2)
    with pytest.raises(ValueError, match="num_steps"):
        project(G, target, distance="mse", num_steps=0)
    cond, _ = _tiny_generator(c_dim=3)
    with pytest.raises(ValueError, match="class_idx"):
        project(cond, target, distance="mse", num_steps=2, w_avg_samples=10)


def test_conditional_projection_takes_a_class(target):
    cond, _ = _tiny_generator(c_dim=3)
    result = project(cond, target, distance="mse", num_steps=3, class_idx=2, w_avg_samples=100)
    assert result.ws.shape == (1, cond.num_ws, cond.w_dim)


def test_original_stylegan_generator():
    G, _ = _tiny_generator(cfg="stylegan1", channel_base=512, channel_max=32, map_layers=2, z_dim=32, w_dim=32)
    with torch.no_grad():
        target = G(torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(5)), None, noise_mode="const")
    buffers = {name: buf.clone() for name, buf in noise_buffers(G).items()}
    result = project(G, target, distance="mse", num_steps=30, w_avg_samples=500)
    assert result.distances[-1] < 0.5 * result.distances[0]
    assert set(result.noise) == set(buffers) and len(buffers) == G.num_ws
    assert all(torch.equal(buf, buffers[name]) for name, buf in noise_buffers(G).items())


def test_load_target_crops_and_resizes(tmp_path, G):
    pixels = np.zeros([20, 30, 3], np.uint8)
    pixels[:, 5:25] = 255  # The centred 20x20 square is white; the side margins black.
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    target = load_target(tmp_path / "wide.png", G)
    assert target.shape == (1, 3, 16, 16) and target.dtype == torch.float32
    assert torch.equal(target, torch.ones_like(target))
    gray, _ = _tiny_generator(img_channels=1)
    assert load_target(tmp_path / "wide.png", gray).shape == (1, 1, 16, 16)


def test_load_target_rejects_non_images(tmp_path, G):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="target: .*notes.png is not an image"):
        load_target(tmp_path / "notes.png", G)
    with pytest.raises(FileNotFoundError, match="target"):
        load_target(tmp_path / "absent.png", G)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    G, D = _tiny_generator(seed=1)
    save_networks(root / "net.safetensors", {"G": G, "D": D, "G_ema": copy.deepcopy(G)}, config={})
    with torch.no_grad():
        z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(7))
        image = ((G(z, None, noise_mode="const")[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / "target.png")
    return root, G


def _read(path):
    return np.asarray(Image.open(path))


def test_cli_writes_the_projection_and_generate_renders_it(checkpoint, tmp_path, capsys):
    root, G = checkpoint
    out = tmp_path / "proj"
    assert cli.main(["project", "--network", str(root / "net.safetensors"), "--target", str(root / "target.png"),
                     "--outdir", str(out), "--loss", "mse", "--steps", "12", "--save-frames", "5",
                     "--device", "cpu", "--impl", "ref"]) == 0  # fmt: skip
    assert "step 12/12" in capsys.readouterr().out

    target = _read(out / "target.png")
    assert target.shape == (16, 16, 3)
    assert np.array_equal(target, _read(root / "target.png"))
    assert _read(out / "proj.png").shape == (16, 16, 3)
    with np.load(out / "projected_w.npz") as saved:
        assert saved["w"].shape == (1, G.num_ws, G.w_dim) and saved["w"].dtype == np.float32
        noise = {name: saved[name] for name in saved.files if name != "w"}
    assert {k: v.shape for k, v in noise.items()} == {k: tuple(v.shape) for k, v in noise_buffers(G).items()}
    frames = sorted(p.name for p in (out / "frames").iterdir())
    assert frames == ["step00000.png", "step00005.png", "step00010.png"]
    frame = _read(out / "frames" / "step00010.png")
    assert frame.shape == (16, 32, 3) and np.array_equal(frame[:, :16], target)

    rendered = tmp_path / "rendered"
    assert cli.main(["generate", "--network", str(root / "net.safetensors"), "--projected-w", str(out / "projected_w.npz"),
                     "--outdir", str(rendered), "--device", "cpu", "--impl", "ref"]) == 0  # fmt: skip
    assert np.array_equal(_read(rendered / "proj0000.png"), _read(out / "proj.png"))
    with pytest.raises(SystemExit, match="--seeds"):
        cli.main(["generate", "--network", str(root / "net.safetensors"), "--projected-w", str(out / "projected_w.npz"),
                  "--seeds", "1", "--outdir", str(rendered)])  # fmt: skip


def test_cli_perceptual_loss_with_a_vgg16_file(checkpoint, tmp_path):
    root, _ = checkpoint
    gen = torch.Generator().manual_seed(0)
    state, idx, channels = {}, 0, 3
    for item in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]:
        if item == "M":
            idx += 1
            continue
        state[f"features.{idx}.weight"] = torch.randn([item, channels, 3, 3], generator=gen) * math.sqrt(2 / (9 * channels))
        state[f"features.{idx}.bias"] = torch.zeros([item])
        idx, channels = idx + 2, item
    torch.save(state, tmp_path / "vgg16.pth")
    result = project_file(root / "net.safetensors", root / "target.png", tmp_path / "out", num_steps=6,
                          vgg16=tmp_path / "vgg16.pth", device="cpu", impl="ref", w_avg_samples=200)  # fmt: skip
    assert len(result.distances) == 6 and all(d > 0 for d in result.distances)
    assert (tmp_path / "out" / "proj.png").is_file()


def test_cli_refuses_without_vgg16(checkpoint, tmp_path):
    root, _ = checkpoint
    args = ["project", "--network", str(root / "net.safetensors"), "--target", str(root / "target.png"),
            "--outdir", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(SystemExit, match=r"needs VGG16 weights.*--vgg16.*--loss mse"):
        cli.main(args)
    with pytest.raises(ValueError, match="needs VGG16 weights"):
        project_file(root / "net.safetensors", root / "target.png", tmp_path / "out")
    with pytest.raises(ValueError, match="does not use them"):
        project_file(root / "net.safetensors", root / "target.png", tmp_path / "out", loss="mse", vgg16="vgg16.pth")
    assert not (tmp_path / "out").exists()


def test_load_projected_w_checks_the_file(checkpoint, tmp_path):
    _, G = checkpoint
    np.savez(tmp_path / "short.npz", w=np.zeros([1, G.num_ws - 1, G.w_dim], np.float32))
    with pytest.raises(ValueError, match=r"'w' must have shape \[N, 6, 128\]"):
        load_projected_w(tmp_path / "short.npz", G, torch.device("cpu"))
    np.savez(tmp_path / "odd.npz", w=np.ones([1, G.num_ws, G.w_dim], np.float32), extra=np.ones([4, 4], np.float32))
    with pytest.raises(ValueError, match="'extra' is not a noise buffer"):
        load_projected_w(tmp_path / "odd.npz", G, torch.device("cpu"))
    np.save(tmp_path / "plain.npy", np.ones([1, G.num_ws, G.w_dim], np.float32))
    with pytest.raises(ValueError, match="not a .npz archive"):
        load_projected_w(tmp_path / "plain.npy", G, torch.device("cpu"))
