"""Datasets of dan, by registry: AV-MNIST, MNIST, FSDD, a class-folder tree, a CSV/JSONL manifest of your own
files, and a synthetic stand-in; modality readers turn files into tower inputs."""

from __future__ import annotations

from dan.data.dataset import Dataset, Split
from dan.data.loader import TensorBatchLoader
from dan.data.readers import READERS, Reader, build_reader, reader_from_spec, register_reader
from dan.data.registry import DATASETS, build_data, build_dataset, dataset_names, register_dataset

__all__ = [
    "DATASETS",
    "READERS",
    "Dataset",
    "Reader",
    "Split",
    "TensorBatchLoader",
    "build_data",
    "build_dataset",
    "build_reader",
    "dataset_names",
    "reader_from_spec",
    "register_dataset",
    "register_reader",
]
