"""The trainer's data: datasets, the resumable index stream, and batch loading.

    dataset = open_dataset("path/to/images", resolution=256, mirror=True)
    loader = make_loader(dataset, batch_size=8, seed=0, rank=rank, world_size=world_size)
    images, c = next(loader)          # uint8 [8, 3, 256, 256], float32 one-hot [8, label_dim]
    x = to_float(images.to(device))   # float32 in [-1, 1]
    state = loader.state_dict()       # save with the checkpoint; loader.load_state_dict(state)

Inputs (`spec`): 'demo:faces', 'demo:textures' (demo.py), a folder or .zip of images, a
.npy / .npz uint8 array, an LMDB folder (sources.py), CIFAR-10 and MNIST as published
(standard.py). Labels: labels.py.
"""

from stylegan_fast.data.dataset import DEFAULT_CACHE_BYTES, ImageDataset, open_dataset
from stylegan_fast.data.loader import ResumableLoader, make_loader
from stylegan_fast.data.sampler import InfiniteSampler
from stylegan_fast.data.transforms import prepare_image, to_float, to_uint8

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "ImageDataset",
    "InfiniteSampler",
    "ResumableLoader",
    "make_loader",
    "open_dataset",
    "prepare_image",
    "to_float",
    "to_uint8",
]
