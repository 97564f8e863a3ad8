"""A trained generator as a standalone program for serving: one torch.export file (.pt2).

    stylegan-fast export --network snapshot.safetensors --out G.pt2 --trunc 0.7

The file holds G_ema, mapping and synthesis, as one ExportedProgram traced through the
reference ops (plain PyTorch operators, no custom kernels), so it loads and runs wherever
PyTorch does, without stylegan_fast installed:

    program = torch.export.load("G.pt2").module()
    images = program(z, c)  # z float32 [N, z_dim]; c float32 [N, c_dim] ([N, 0] if unconditional)

The batch size N is dynamic (1 to MAX_BATCH). Fixed when exporting: the truncation (psi and
cutoff), the noise mode ('const' makes the program deterministic; 'random' draws torch's
generator at every call), the precision (the network's own mixed precision, or float32
throughout), the device, and the output: float32 [N, C, H, W] in about [-1, 1], or uint8
[N, H, W, C] (rounded and clamped as `stylegan-fast generate` writes its PNGs). The
StyleGAN2 synthesis layers are traced in their non-fused order (the styles scale the
activations around one convolution shared by the batch), which computes the same as the
grouped convolution of eval mode up to rounding and does not tie the program to one batch
size. The settings and the network's dimensions are stored in the file as
"stylegan_fast.json" (torch.export.load(path, extra_files={"stylegan_fast.json": ""})).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch
from torch import nn

import stylegan_fast
from stylegan_fast._atomic import atomic_path
from stylegan_fast.data import to_uint8
from stylegan_fast.generate import check_truncation_cutoff, load_generator
from stylegan_fast.models.stylegan2 import NOISE_MODES, Generator

MAX_BATCH = 4096
META_FILE = "stylegan_fast.json"


class ServingGenerator(nn.Module):
    """G with the export's settings fixed: (z, c) -> images."""

    def __init__(self, G: nn.Module, truncation_psi: float, truncation_cutoff: int | None, noise_mode: str,
                 uint8: bool, force_fp32: bool):  # fmt: skip
        super().__init__()
        self.G = G
        self.kwargs = dict(truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, noise_mode=noise_mode)
        if isinstance(G, Generator):  # StyleGAN2: no per-batch grouped convolution; optionally float32 throughout
            self.kwargs.update(fused_modconv=False, force_fp32=force_fp32)
        self.uint8 = uint8

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        images = self.G(z, c, **self.kwargs)
        return to_uint8(images).permute(0, 2, 3, 1) if self.uint8 else images


def export_generator(
    network: str | os.PathLike,
    out: str | os.PathLike,
    *,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    noise_mode: str = "const",
    uint8: bool = False,
    force_fp32: bool = False,
    device: str | torch.device = "cpu",
    force: bool = False,
) -> dict:
    """Write the G_ema of `network` (a snapshot, networks checkpoint or official .pkl) to `out` as a
    torch.export program (see the module docstring); returns the metadata stored with it.

    Args:
        truncation_psi, truncation_cutoff, noise_mode: as for generate.
        uint8: output uint8 [N, H, W, C] images instead of float32 [N, C, H, W].
        force_fp32: run every layer in float32 (else the network's mixed precision).
        device: where the program's weights live and it runs.
        force: replace an existing `out` (else it is refused).
    """
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass force=True (--force) to replace it")
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
    truncation_cutoff = check_truncation_cutoff(truncation_cutoff)
    device = torch.device(device)
    G = load_generator(network, device, impl="ref")
    program = ServingGenerator(G, float(truncation_psi), truncation_cutoff, noise_mode, uint8, force_fp32).eval()
    example = (torch.randn([2, G.z_dim], device=device), torch.zeros([2, G.c_dim], device=device))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        exported = torch.export.export(program, example, dynamic_shapes={"z": {0: batch}, "c": {0: batch}})
    meta = {
        "z_dim": G.z_dim, "c_dim": G.c_dim, "img_resolution": G.img_resolution, "img_channels": G.img_channels,
        "truncation_psi": float(truncation_psi), "truncation_cutoff": truncation_cutoff, "noise_mode": noise_mode,
        "output": "uint8 [N, H, W, C]" if uint8 else "float32 [N, C, H, W] in [-1, 1]",
        "precision": "float32" if force_fp32 else "the network's", "device": str(device), "max_batch": MAX_BATCH,
        "network": os.fspath(network), "stylegan_fast": stylegan_fast.__version__,
    }  # fmt: skip
    archive = io.BytesIO()  # torch.export.save names files only *.pt2: write the temporary file from memory
    torch.export.save(exported, archive, extra_files={META_FILE: json.dumps(meta)})
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_bytes(archive.getbuffer())
    return meta
