"""Data: the shared clip layout, pair sampling, the HeadDataModule, synthetic data, preprocessing, inputs, crops."""

from headrecon.data.check import check_root
from headrecon.data.datamodule import HeadDataModule, SkippedFramesLogger
from headrecon.data.layout import index_root, index_roots
from headrecon.data.pairs import PairSampler
from headrecon.data.preprocess import preprocess_nersemble, preprocess_vfhq
from headrecon.data.synthetic import SyntheticOptions, write_synthetic_dataset

__all__ = [
    "HeadDataModule",
    "PairSampler",
    "SkippedFramesLogger",
    "SyntheticOptions",
    "check_root",
    "index_root",
    "index_roots",
    "preprocess_nersemble",
    "preprocess_vfhq",
    "write_synthetic_dataset",
]
