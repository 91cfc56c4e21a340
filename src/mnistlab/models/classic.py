"""Classic (scikit-learn) models for MNIST-format images, as named recipes.

A recipe is data: which model, which split, the hyper-parameters with their meaning in a
comment, and the evidence for the defaults (docs/benchmarks.md). Every model is a
``Pipeline`` that takes raw uint8 images (N, 28, 28) or (N, 784), so a saved model needs
nothing else to predict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mnistlab.errors import MnistlabError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# The builders import scikit-learn (and torch, through the features) when called, not when
# this registry is read: `mnistlab train --help` lists the recipes without loading them.


@dataclass(frozen=True)
class ClassicRecipe:
    """A named way to train a classic model.

    Attributes:
        model: ``logreg``, ``knn``, ``svm`` or ``rf``.
        name: the recipe name (``default``, ``seed``, ...).
        description: one line for ``--help`` and reports.
        split: ``official`` (the dataset's train/test) or ``pooled-80-20`` (train and test
            pooled, then ``train_test_split(test_size=0.2, random_state=42)``, as the
            tutorial did).
        build: seed -> an unfitted pipeline taking raw images.
        search_space: hyper-parameter grid for ``mnistlab search`` (pipeline parameter names).
    """

    model: str
    name: str
    description: str
    split: str
    build: Callable[[int], Pipeline]
    search_space: dict[str, list[Any]] = field(default_factory=dict)


def _logreg_default(seed: int) -> Pipeline:
    from sklearn.pipeline import Pipeline

    from mnistlab.features.preprocess import PixelScaler
    from mnistlab.models.logistic import TorchLogisticRegression

    return Pipeline(
        [
            ("scale", PixelScaler()),  # x / 255
            # softmax regression, L2 alpha=1e-4, 60 L-BFGS iterations (MNIST test accuracy
            # 0.9253; 100 iterations give 0.9260 in 1.7x the time), bf16 matmuls where the
            # CPU has bf16 kernels, else fp32
            ("clf", TorchLogisticRegression(alpha=1e-4, max_iter=60)),
        ]
    )


def _logreg_seed(seed: int) -> Pipeline:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import Pipeline

    from mnistlab.features.preprocess import PixelScaler

    # The tutorial: LogisticRegression(multi_class='ovr', solver='lbfgs', max_iter=1000) on
    # x / 255 in float64. scikit-learn >= 1.7 removed multi_class; OneVsRestClassifier fits
    # the same ten independent binary problems.
    return Pipeline(
        [
            ("scale", PixelScaler(dtype="float64")),
            ("clf", OneVsRestClassifier(LogisticRegression(solver="lbfgs", max_iter=1000))),
        ]
    )


def _knn(seed: int) -> Pipeline:
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline

    from mnistlab.features.preprocess import Deskewer, PixelScaler

    return Pipeline(
        [
            ("deskew", Deskewer()),  # straighten slanted digits (image moments)
            ("scale", PixelScaler()),
            ("pca", PCA(n_components=40, random_state=seed)),  # 784 -> 40 dims: faster, less noise
            # brute force: what "auto" picks at 40 dimensions anyway; a fitted KD/ball tree
            # is an index structure model files cannot check, so it is never saved
            (
                "clf",
                KNeighborsClassifier(
                    n_neighbors=4, weights="distance", algorithm="brute", n_jobs=-1
                ),
            ),
        ]
    )


def _svm(seed: int) -> Pipeline:
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVC

    from mnistlab.features.preprocess import Deskewer, PixelScaler

    return Pipeline(
        [
            ("deskew", Deskewer()),
            ("scale", PixelScaler()),
            ("pca", PCA(n_components=50, random_state=seed)),
            ("clf", SVC(kernel="rbf", C=5.0, gamma="scale", random_state=seed)),  # RBF, C=5
        ]
    )


def _rf(seed: int) -> Pipeline:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    from mnistlab.features.preprocess import PixelScaler

    return Pipeline(
        [
            ("scale", PixelScaler()),
            ("clf", RandomForestClassifier(n_estimators=200, n_jobs=-1, random_state=seed)),
        ]
    )


RECIPES: dict[tuple[str, str], ClassicRecipe] = {
    (r.model, r.name): r
    for r in (
        ClassicRecipe(
            "logreg",
            "default",
            "softmax regression by full-batch L-BFGS in torch (bf16 matmuls), official split",
            "official",
            _logreg_default,
            {"clf__alpha": [1e-5, 1e-4, 1e-3, 1e-2], "clf__max_iter": [50, 100, 200]},
        ),
        ClassicRecipe(
            "logreg",
            "seed",
            "the tutorial: one-vs-rest lbfgs, max_iter=1000, 70k pooled, 80/20 split (seed 42)",
            "pooled-80-20",
            _logreg_seed,
        ),
        ClassicRecipe(
            "knn",
            "default",
            "k-nearest neighbours (k=4, distance-weighted) on deskewed PCA-40",
            "official",
            _knn,
            {"pca__n_components": [30, 40, 60], "clf__n_neighbors": [1, 3, 4, 6, 8]},
        ),
        ClassicRecipe(
            "svm",
            "default",
            "RBF SVM (C=5) on deskewed PCA-50",
            "official",
            _svm,
            {"pca__n_components": [40, 50, 70], "clf__C": [1.0, 5.0, 10.0, 30.0]},
        ),
        ClassicRecipe(
            "rf",
            "default",
            "random forest, 200 trees, on pixels",
            "official",
            _rf,
            {"clf__n_estimators": [100, 200, 400], "clf__max_features": ["sqrt", 0.1]},
        ),
    )
}

CLASSIC_MODELS = tuple(dict.fromkeys(model for model, _ in RECIPES))


def get_recipe(model: str, recipe: str = "default") -> ClassicRecipe:
    """The recipe ``recipe`` of ``model``.

    Raises:
        MnistlabError: unknown model or recipe (the message lists the known ones).
    """
    if (model, recipe) in RECIPES:
        return RECIPES[(model, recipe)]
    if model not in CLASSIC_MODELS:
        raise MnistlabError(
            f"unknown classic model {model!r}; choose one of {', '.join(CLASSIC_MODELS)}"
        )
    known = [name for m, name in RECIPES if m == model]
    raise MnistlabError(
        f"model {model!r} has no recipe {recipe!r}; its recipes: {', '.join(known)}"
    )
