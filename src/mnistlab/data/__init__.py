"""The data stage: a registry of MNIST-format datasets; fetching from mirrors with
verification, retries and resume; importing local files; loading into numpy; validation
splits; exploration (summary and plots)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mnistlab.data.cache import (
    default_home,
    get_spec,
    imported_specs,
    is_cached,
    verify_dataset,
)
from mnistlab.data.download import fetch_dataset
from mnistlab.data.explore import (
    DatasetSummary,
    SplitSummary,
    explore_dataset,
    summarize_dataset,
    summarize_splits,
)
from mnistlab.data.idx import parse_idx, read_idx, write_idx
from mnistlab.data.importing import import_dataset
from mnistlab.data.load import DatasetSplit, load_dataset
from mnistlab.data.registry import REGISTRY, DatasetSpec
from mnistlab.data.splits import stratified_indices, validation_split


@dataclass(frozen=True)
class DatasetStatus:
    """A dataset as ``mnistlab data list`` shows it."""

    spec: DatasetSpec
    cached: bool


def list_datasets(home: str | os.PathLike[str] | None = None) -> list[DatasetStatus]:
    """Every registered and imported dataset, with whether it is available locally."""
    specs = [*REGISTRY.values(), *imported_specs(home)]
    return [DatasetStatus(spec, is_cached(spec, home)) for spec in specs]


__all__ = [
    "REGISTRY",
    "DatasetSpec",
    "DatasetSplit",
    "DatasetStatus",
    "DatasetSummary",
    "SplitSummary",
    "default_home",
    "explore_dataset",
    "fetch_dataset",
    "get_spec",
    "import_dataset",
    "is_cached",
    "list_datasets",
    "load_dataset",
    "parse_idx",
    "read_idx",
    "stratified_indices",
    "summarize_dataset",
    "summarize_splits",
    "validation_split",
    "verify_dataset",
    "write_idx",
]
