"""The StyleGAN2 ops: each public function validates its arguments, picks an implementation
('ref', 'triton' or 'cuda'; see `_dispatch`) and runs it. The `_*_ref` functions beside
them are the pure-PyTorch specification."""

from stylegan_fast.ops.bias_act import bias_act

__all__ = ["bias_act"]
