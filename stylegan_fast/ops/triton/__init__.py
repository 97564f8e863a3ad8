"""Triton kernels, one module per op; each is selected with impl='triton'."""
