"""stylegan-fast export: G_ema as a standalone torch.export program (stylegan_fast/export.py)."""

import json
import subprocess
import sys

import pytest
import torch

from stylegan_fast import cli
from stylegan_fast.data import to_uint8
from stylegan_fast.export import META_FILE, export_generator
from stylegan_fast.generate import load_generator
from stylegan_fast.models import make_networks, save_networks


def load(path):
    meta = {META_FILE: ""}
    program = torch.export.load(str(path), extra_files=meta).module()
    return program, json.loads(meta[META_FILE])


def latents(n, z_dim, seed=0):
    return torch.randn([n, z_dim], generator=torch.Generator().manual_seed(seed))


def test_program_computes_g_ema_for_any_batch(checkpoint, tmp_path):
    meta = export_generator(checkpoint, tmp_path / "G.pt2", truncation_psi=0.7)
    program, stored = load(tmp_path / "G.pt2")
    assert stored == meta and meta["truncation_psi"] == 0.7 and meta["noise_mode"] == "const"
    G = load_generator(checkpoint, torch.device("cpu"), impl="ref")
    for n in (1, 3, 5):  # none of them the batch of 2 it was traced with
        z, c = latents(n, G.z_dim, seed=n), torch.zeros([n, 0])
        images = program(z, c)
        # The traced order of the synthesis layers (styles around one shared convolution) exactly,
        # and eval mode's grouped convolution up to rounding.
        torch.testing.assert_close(images, G(z, c, truncation_psi=0.7, noise_mode="const", fused_modconv=False),
                                   rtol=0, atol=0)  # fmt: skip
        torch.testing.assert_close(images, G(z, c, truncation_psi=0.7, noise_mode="const"), rtol=1e-5, atol=1e-5)


def test_uint8_output_is_what_generate_writes(checkpoint, tmp_path):
    export_generator(checkpoint, tmp_path / "G.pt2", uint8=True)
    program, meta = load(tmp_path / "G.pt2")
    G = load_generator(checkpoint, torch.device("cpu"), impl="ref")
    z, c = latents(3, G.z_dim), torch.zeros([3, 0])
    images = program(z, c)
    assert images.dtype == torch.uint8 and images.shape == (3, 16, 16, 3) and meta["output"] == "uint8 [N, H, W, C]"
    expected = to_uint8(G(z, c, noise_mode="const", fused_modconv=False)).permute(0, 2, 3, 1)
    assert torch.equal(images, expected)


@pytest.mark.parametrize("cfg", ["small", "stylegan1"])
def test_conditional_and_stylegan1_generators_export(cfg, tmp_path):
    torch.manual_seed(0)
    G, _ = make_networks(cfg, 8, c_dim=3, impl="ref")
    save_networks(tmp_path / "net.safetensors", {"G_ema": G}, config={})
    export_generator(tmp_path / "net.safetensors", tmp_path / "G.pt2", noise_mode="none")
    program, meta = load(tmp_path / "G.pt2")
    assert meta["c_dim"] == 3 and meta["img_resolution"] == 8
    z = latents(4, G.z_dim)
    c = torch.eye(3)[torch.tensor([0, 1, 2, 0])]
    images = program(z, c)
    kwargs = dict(fused_modconv=False) if cfg == "small" else {}
    torch.testing.assert_close(images, G.eval()(z, c, noise_mode="none", **kwargs), rtol=0, atol=0)
    assert not torch.equal(program(z, torch.eye(3)[torch.tensor([1, 2, 0, 1])]), images)  # the labels are an input


def test_random_noise_draws_at_every_call(tmp_path):
    torch.manual_seed(0)
    G, _ = make_networks("small", 8, impl="ref")
    with torch.no_grad():  # noise strengths start at 0, which would hide the noise
        for name, param in G.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.5)
    save_networks(tmp_path / "net.safetensors", {"G_ema": G}, config={})
    export_generator(tmp_path / "net.safetensors", tmp_path / "G.pt2", noise_mode="random")
    program, meta = load(tmp_path / "G.pt2")
    z, c = latents(2, meta["z_dim"]), torch.zeros([2, 0])
    torch.manual_seed(5)
    first = program(z, c)
    torch.manual_seed(5)
    assert torch.equal(program(z, c), first) and not torch.equal(program(z, c), first)


def test_the_program_runs_without_stylegan_fast(checkpoint, tmp_path):
    meta = export_generator(checkpoint, tmp_path / "G.pt2")
    code = (
        "import sys, torch\n"
        f"program = torch.export.load({str(tmp_path / 'G.pt2')!r}).module()\n"
        f"images = program(torch.randn(3, {meta['z_dim']}), torch.zeros(3, 0))\n"
        "assert not any(name.startswith('stylegan_fast') for name in sys.modules), 'stylegan_fast was imported'\n"
        "print(list(images.shape))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[3, 3, 16, 16]"


def test_cli_writes_the_program_and_keeps_an_existing_file(checkpoint, tmp_path, capsys):
    out = tmp_path / "G.pt2"
    assert cli.main(["export", "--network", str(checkpoint), "--out", str(out), "--trunc", "0.5", "--uint8"]) == 0
    assert "wrote" in capsys.readouterr().out and load(out)[1]["truncation_psi"] == 0.5
    before = out.read_bytes()
    with pytest.raises(SystemExit) as raised:
        cli.main(["export", "--network", str(checkpoint), "--out", str(out)])
    assert raised.value.code == 2 and "exists; pass force=True (--force)" in str(raised.value)
    assert out.read_bytes() == before
    assert cli.main(["export", "--network", str(checkpoint), "--out", str(out), "--force"]) == 0
    assert load(out)[1]["truncation_psi"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["G.pt2"]  # no temporary file left


def test_a_bad_truncation_cutoff_is_named_before_anything_is_read(tmp_path):
    with pytest.raises(ValueError, match=r"truncation_cutoff \(--trunc-cutoff\) must be None .* got -3"):
        export_generator(tmp_path / "missing.safetensors", tmp_path / "G.pt2", truncation_cutoff=-3)
