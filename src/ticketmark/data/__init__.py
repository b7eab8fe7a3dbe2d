"""Datasets as in-memory tensors with seeded splits, plus a tiny tensor loader.

Everything here fits in memory (the largest, CIFAR, is 150 MB as uint8), so batches are
cut from tensors directly: faster than ``DataLoader`` and trivially shardable for DDP.
"""

from ticketmark.data.loader import TensorLoader
from ticketmark.data.registry import DATASETS, DataSplits, Split, load_dataset

__all__ = ["DATASETS", "DataSplits", "Split", "TensorLoader", "load_dataset"]
