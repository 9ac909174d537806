"""Data: loaders, splits, transforms and offline datasets (no downloads, ever)."""

from gpudl.data import generated, transforms
from gpudl.data.datasets import (
    DatasetError,
    cifar10,
    digits,
    fashion_mnist,
    mnist,
    mnist_5k,
    read_idx,
)
from gpudl.data.generated import (
    adding_task,
    blobs,
    copy_task,
    moons,
    polynomial,
    sine,
    spirals,
    xor,
)
from gpudl.data.graphs import karate_club
from gpudl.data.loader import ArrayDataset, DataLoader
from gpudl.data.splits import kfold, train_val_test_split
from gpudl.data.text import Vocab, bucket_batches, char_corpus, pad_batch, read_text, stdlib_text
from gpudl.data.transforms import Standardizer, augment

__all__ = [n for n in dir() if not n.startswith("_")]
