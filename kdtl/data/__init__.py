"""Datasets, chosen by registered name (``data: imdb``)."""

from kdtl.data.base import DATASETS, DataBundle, Split, stratified_split, stratified_subset
from kdtl.data import images, synthetic, text  # noqa: F401  (register the datasets)

__all__ = ["DATASETS", "DataBundle", "Split", "stratified_split", "stratified_subset"]
