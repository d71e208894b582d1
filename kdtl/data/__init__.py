"""Datasets, chosen by registered name (``data: imdb``)."""

from kdtl.data.base import DATASETS, DataBundle, Split, stratified_split, stratified_subset
from kdtl.data import synthetic  # noqa: F401  (registers "synthetic")

__all__ = ["DATASETS", "DataBundle", "Split", "stratified_split", "stratified_subset"]
