"""mnistlab: develop and fine-tune models from zero on MNIST and its family.

The library is the product; the ``mnistlab`` command and the web app are thin layers over
it. Sub-packages follow the workflow: :mod:`mnistlab.data` (fetch, verify, import, load,
explore) today; features, models, training, evaluation and serving as they land.

Quick start::

    import mnistlab
    images, labels = mnistlab.load_dataset("mnist", "train").arrays()   # fetched on first use
    train, val = mnistlab.validation_split(mnistlab.load_dataset("mnist"), val_size=5000)
"""

from mnistlab.data import (
    DatasetSpec,
    DatasetSplit,
    DatasetSummary,
    default_home,
    explore_dataset,
    fetch_dataset,
    get_spec,
    import_dataset,
    list_datasets,
    load_dataset,
    summarize_dataset,
    validation_split,
    verify_dataset,
)
from mnistlab.errors import MnistlabError
from mnistlab.runs import Run, open_run

__version__ = "0.1.0"

__all__ = [
    "DatasetSpec",
    "DatasetSplit",
    "DatasetSummary",
    "MnistlabError",
    "Run",
    "__version__",
    "default_home",
    "explore_dataset",
    "fetch_dataset",
    "get_spec",
    "import_dataset",
    "list_datasets",
    "load_dataset",
    "open_run",
    "summarize_dataset",
    "validation_split",
    "verify_dataset",
]
