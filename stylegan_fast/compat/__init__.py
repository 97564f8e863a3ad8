"""Import of official NVlabs network pickles (StyleGAN2-ADA, StyleGAN3's stylegan2, and the
TensorFlow StyleGAN2, StyleGAN2-ADA and StyleGAN releases), without executing them.

    nets = load_nvlabs("network-snapshot-025000.pkl")    # {'G', 'D', 'G_ema'} as stylegan_fast modules
    convert("ffhq.pkl", "ffhq")                          # the same, written as a stylegan_fast checkpoint
    load_network_file(path)                              # a checkpoint of ours, or a '.pkl' as load_nvlabs reads it

safe_pickle reads the pickle through an allow-list (any other global raises UnsafePickleError);
nvlabs (and nvlabs_tf, for the TensorFlow releases) rebuilds the networks from the data.
"""

from stylegan_fast.compat.nvlabs import convert, load_network_file, load_nvlabs, read_nvlabs_pickle
from stylegan_fast.compat.safe_pickle import NVlabsPickleError, UnsafePickleError

__all__ = ["NVlabsPickleError", "UnsafePickleError", "convert", "load_network_file", "load_nvlabs", "read_nvlabs_pickle"]
