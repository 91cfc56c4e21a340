"""Label propagation: a few labels spread over a k-nearest-neighbour graph of backbone features.

The first stage of ``mnistlab fewshot``'s default method (``method="propagate"``):

1. **Embed**: every training image goes through the self-supervised backbone's convolutional
   ``features`` (no label read); the flattened maps are reduced to :data:`PCA_DIMS` principal
   components and scaled to unit length, so that a dot product is a cosine similarity.
2. **Graph**: each image's ``k`` most similar images, weighted by ``similarity ** gamma``
   (Iscen et al. 2019, "Label Propagation for Deep Semi-supervised Learning"); the graph is
   made symmetric and normalised, ``W = D^-1/2 A D^-1/2``.
3. **Propagate** (Zhou et al. 2004, "Learning with Local and Global Consistency"):
   ``F <- alpha W F + (1 - alpha) Y``, with ``Y`` the one-hot labels of the labelled images
   (zero rows elsewhere), ``iterations`` times; each class's column is then divided by its
   total mass, so that a class with many labelled images does not win by numbers, and each
   row is normalised into class probabilities.

Every unlabeled image gets the class it received the most of: a pseudo-label, right for about
98.6 % of MNIST's unlabeled images from 100 labels with the shipped backbone (docs/benchmarks.md,
"Few labels"). A student CNN then learns them (:func:`mnistlab.pretraining.fewshot.fewshot`).

Written here rather than taken from scikit-learn: ``sklearn.semi_supervised.LabelSpreading``
links each image to its neighbours with equal weights and has no class-mass normalisation;
on the same features and draw it labels 95.97 % of the images right, against 98.85 % here,
in about the same time (``benchmarks/propagation_benchmark.py``, docs/benchmarks.md). These
functions run the neighbour search as chunked matrix products on the device torch uses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.training.runtime import autocast

PCA_DIMS = 128  # principal components of the backbone features kept for the graph
SEARCH_CHUNK = 4096  # rows of the similarity matrix computed at once (4096 x 60,000 floats)


@torch.no_grad()
def embed_images(
    features: nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    dims: int | None = PCA_DIMS,
    precision: str = "fp32",
    batch_size: int = 2048,
    seed: int = 0,
) -> torch.Tensor:
    """Unit-length features of uint8 images ``(N, 28, 28)`` or ``(N, 1, 28, 28)``.

    Args:
        features: the backbone (a CNN's ``features`` module); run in eval mode, on its device.
        images: the images, fed as ``x / 255``.
        dims: principal components kept (None or >= the feature size: all of them, uncentred).
        precision: ``fp32`` or ``bf16`` (autocast) for the forward pass.
        batch_size: images per forward pass.
        seed: the seed of the randomized PCA.

    Returns:
        float32 ``(N, D)`` on the backbone's device, each row of norm 1.
    """
    features.eval()
    device = next(features.parameters()).device
    x = torch.as_tensor(images)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    parts = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size].to(device).float() / 255
        with autocast(device, precision):
            parts.append(features(batch).flatten(1).float())
    z = torch.cat(parts)
    if dims is not None and dims < z.shape[1]:
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # pca_lowrank draws a random projection
        try:
            _, _, v = torch.pca_lowrank(z, q=dims, center=True)
        finally:
            torch.random.set_rng_state(state)
        z = (z - z.mean(0)) @ v
    return F.normalize(z, dim=1)


@torch.no_grad()
def knn_graph(
    z: torch.Tensor, k: int, *, chunk: int = SEARCH_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``k`` nearest other rows by dot product (cosine similarity for unit rows).

    Args:
        z: ``(N, D)`` float features (rows of norm 1).
        k: neighbours per row, ``1 <= k < N``.
        chunk: rows compared with all others at once (memory: ``chunk * N`` floats).

    Returns:
        ``(neighbours, similarities)``: int64 and float32 ``(N, k)``, most similar first; a row
        is never its own neighbour.

    Raises:
        ValueError: ``k`` out of range.
    """
    n = len(z)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} points; got {k}")
    neighbours, similarities = [], []
    for start in range(0, n, chunk):
        sim = z[start : start + chunk] @ z.T
        rows = torch.arange(len(sim), device=z.device)
        sim[rows, rows + start] = -torch.inf  # not its own neighbour
        values, index = sim.topk(k, dim=1)
        neighbours.append(index)
        similarities.append(values.float())
    return torch.cat(neighbours), torch.cat(similarities)


@torch.no_grad()
def propagate_labels(
    neighbours: torch.Tensor,
    similarities: torch.Tensor,
    labelled: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    alpha: float = 0.99,
    gamma: float = 3.0,
    iterations: int = 30,
) -> torch.Tensor:
    """Class probabilities of every node of a k-NN graph, spread from a few labelled nodes.

    Args:
        neighbours, similarities: the graph, as :func:`knn_graph` returns it.
        labelled: int64 indices of the labelled nodes.
        labels: their classes, int64, same length.
        num_classes: the number of classes.
        alpha: how far labels travel, in (0, 1): the weight of the neighbours against the
            node's own label at each step.
        gamma: edge weight = ``max(similarity, 0) ** gamma`` (larger: only close neighbours
            count).
        iterations: propagation steps.

    Returns:
        float32 ``(N, num_classes)``, rows summing to 1 (a row that no label reached is
        uniform). Labelled rows are not forced to their label; the caller keeps true labels.

    Raises:
        ValueError: bad alpha, mismatched labels, a class index out of range.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    if labelled.shape != labels.shape or labelled.dim() != 1:
        raise ValueError("labelled and labels must be 1-D and of the same length")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ValueError(f"labels must be class indices in [0, {num_classes})")
    n, k = neighbours.shape
    device = neighbours.device
    rows = torch.arange(n, device=device).repeat_interleave(k)
    cols = neighbours.flatten()
    weights = similarities.clamp_min(0).pow(gamma).flatten()
    # A symmetric graph: i -> j and j -> i both carry the edge (a sum where both exist).
    index = torch.cat([torch.stack([rows, cols]), torch.stack([cols, rows])], 1)
    # Indices come from topk over n rows, in range by construction: the check is skipped.
    graph = torch.sparse_coo_tensor(
        index, torch.cat([weights, weights]), (n, n), check_invariants=False
    ).coalesce()
    i, w = graph.indices(), graph.values()
    degree = torch.zeros(n, device=device).index_add_(0, i[0], w)
    scale = degree.clamp_min(1e-12).rsqrt()
    normalised = torch.sparse_coo_tensor(
        i, w * scale[i[0]] * scale[i[1]], (n, n), check_invariants=False
    ).coalesce()
    seeds = torch.zeros(n, num_classes, device=device)
    seeds[labelled, labels] = 1.0
    spread = seeds.clone()
    for _ in range(iterations):
        spread = alpha * torch.sparse.mm(normalised, spread) + (1 - alpha) * seeds
    spread = spread / spread.sum(0, keepdim=True).clamp_min(1e-12)  # class mass normalisation
    total = spread.sum(1, keepdim=True)
    uniform = torch.full_like(spread, 1.0 / num_classes)
    return torch.where(total > 0, spread / total.clamp_min(1e-30), uniform)
