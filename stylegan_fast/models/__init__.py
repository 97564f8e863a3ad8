"""The networks: StyleGAN2 (Generator, Discriminator), the original StyleGAN generator, named
configs (`make_networks`) and safetensors checkpoints (`save_networks`, `load_networks`).

Module, parameter and buffer names are StyleGAN2-ADA's, so its checkpoints load as state_dicts.
"""

from stylegan_fast.models.checkpoint import CheckpointError, load_networks, save_networks
from stylegan_fast.models.configs import CONFIGS, Config, get_config, make_networks
from stylegan_fast.models.discriminator import Discriminator
from stylegan_fast.models.stylegan1 import StyleGAN1Generator
from stylegan_fast.models.stylegan2 import Generator, MappingNetwork, SynthesisNetwork

__all__ = [
    "CONFIGS",
    "CheckpointError",
    "Config",
    "Discriminator",
    "Generator",
    "MappingNetwork",
    "StyleGAN1Generator",
    "SynthesisNetwork",
    "get_config",
    "load_networks",
    "make_networks",
    "save_networks",
]
