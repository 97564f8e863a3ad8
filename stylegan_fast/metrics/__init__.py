"""Quality metrics of trained generators: FID, KID, Inception Score, precision and recall, perceptual path length.

    from stylegan_fast.metrics import compute_metrics
    results = compute_metrics("snapshot.safetensors", "ffhq.zip", "fid50k_full,pr50k3_full,ppl_wend",
                              detector="pt_inception-2015-12-05-6726825d.pth", vgg16="vgg16.pt")

inception.py: the FID Inception-v3 and `load_detector`; statistics.py: streaming feature
statistics, `frechet_distance`, `kernel_inception_distance`, `inception_score`; vgg16.py: VGG16's fc2
features and `load_vgg16_features`; precision_recall.py: improved precision and recall of
two feature sets; ppl.py: perceptual path length; perceptual.py: the LPIPS distance PPL
uses; compute.py: the named metrics of a checkpoint against its dataset, with cached real
statistics; parallel.py: that work shared among torch.distributed processes.
"""

from stylegan_fast.metrics.compute import FEATURE_METRICS, IS_METRICS, PPL_METRICS, PR_METRICS, compute_metrics, format_results
from stylegan_fast.metrics.inception import FeatureDetector, InceptionV3, load_detector
from stylegan_fast.metrics.ppl import parse_ppl_metric, path_lengths, perceptual_path_length
from stylegan_fast.metrics.precision_recall import precision_recall, squared_knn_radii
from stylegan_fast.metrics.statistics import FeatureStats, frechet_distance, inception_score, kernel_inception_distance
from stylegan_fast.metrics.vgg16 import VGG16FC2, load_vgg16_features

__all__ = [
    "FEATURE_METRICS",
    "IS_METRICS",
    "PPL_METRICS",
    "PR_METRICS",
    "VGG16FC2",
    "FeatureDetector",
    "FeatureStats",
    "InceptionV3",
    "compute_metrics",
    "format_results",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "load_detector",
    "load_vgg16_features",
    "parse_ppl_metric",
    "path_lengths",
    "perceptual_path_length",
    "precision_recall",
    "squared_knn_radii",
]
