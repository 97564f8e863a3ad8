"""Fixtures for the model tests: networks small enough to run many times on two CPU cores."""

import pytest
import torch

from stylegan_fast.models import make_networks

# Channels: 16 at 4x4 to 16x16, 8 at 32x32; 16-dimensional latents; 2 mapping layers; float32.
TINY = dict(z_dim=16, w_dim=16, map_layers=2, channel_base=256, channel_max=16, num_fp16_res=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one CPU thread: with these tiny tensors, synchronising torch's intra-op threads
    costs more than the work (a tiny D forward: 0.02 s on 1 thread, 0.3-0.6 s on 2 threads of a
    busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny() -> dict:
    """make_networks overrides that make any config tiny."""
    return dict(TINY)


@pytest.fixture
def make_tiny():
    """make_networks(cfg, resolution, ...) with TINY overrides and a fixed seed: (G, D)."""

    def make(cfg="stylegan2", resolution=16, seed=0, **overrides):
        torch.manual_seed(seed)
        return make_networks(cfg, resolution, **{**TINY, **overrides})

    return make
