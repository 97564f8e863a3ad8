"""Autograd and torch.library wrappers around the kernels compiled into `stylegan_fast._C`, one module per op."""
