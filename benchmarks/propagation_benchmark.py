"""Label propagation on the shipped backbone's features: mnistlab against scikit-learn.

The first stage of ``mnistlab fewshot`` (docs/benchmarks.md, "Few labels"): the 60,000 MNIST
training images are embedded by the shipped SimCLR backbone (128 principal components, unit
length), then ``--labels`` labels of a stratified draw spread to the rest. Peers on the same
features, in the same run:

    mnistlab   knn_graph + propagate_labels (10 neighbours, weights similarity ** 3,
               alpha 0.99, 30 steps, class-mass normalisation)
    sklearn    sklearn.semi_supervised.LabelSpreading(kernel="knn", n_neighbors=10,
               alpha=0.99, max_iter=30): its unweighted graph, in float64
    1-nn       each image takes the label of its most similar labelled image (no graph)

Printed per peer: seconds (graph + propagation; the embedding is timed once, apart) and the
share of the unlabeled images whose pseudo-label is right (hidden labels read to score only),
per draw, and the ratios to mnistlab.

    python benchmarks/propagation_benchmark.py --labels 100 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from mnistlab.data import load_dataset
from mnistlab.models.cnn import build_model
from mnistlab.pretraining.config import DEFAULT_BACKBONE
from mnistlab.pretraining.fewshot import load_backbone
from mnistlab.pretraining.finetune import label_subset
from mnistlab.pretraining.propagate import embed_images, knn_graph, propagate_labels
from mnistlab.runs import cpu_model


def mnistlab_peer(z: torch.Tensor, lab: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    neighbours, sims = knn_graph(z, k)
    probs = propagate_labels(neighbours, sims, torch.from_numpy(lab), torch.from_numpy(y), 10)
    return probs.argmax(1).numpy()


def sklearn_peer(z: torch.Tensor, lab: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    from sklearn.semi_supervised import LabelSpreading

    target = np.full(len(z), -1)
    target[lab] = y
    model = LabelSpreading(kernel="knn", n_neighbors=k, alpha=0.99, max_iter=30)
    return model.fit(z.numpy(), target).transduction_


def one_nn_peer(z: torch.Tensor, lab: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    return y[(z @ z[lab].T).argmax(1).numpy()]


PEERS = {"mnistlab": mnistlab_peer, "sklearn": sklearn_peer, "1-nn": one_nn_peer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--neighbors", type=int, default=10)
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--sklearn-seeds", type=int, default=1, help="draws given to sklearn")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = load_dataset("mnist", "train")
    state, _ = load_backbone(DEFAULT_BACKBONE, "fast-cnn-wide")
    net = build_model("fast-cnn-wide")
    net.features.load_state_dict(state)
    started = time.perf_counter()
    z = embed_images(net.features, train.images, precision="bf16")
    embed_seconds = time.perf_counter() - started
    print(f"{cpu_model()}, {args.threads} threads, torch {torch.__version__}")
    print(f"embedding 60,000 images (bf16) + PCA to {z.shape[1]}: {embed_seconds:.1f} s")
    results: dict[str, list[tuple[float, float]]] = {p: [] for p in args.peers}
    for i, seed in enumerate(args.seeds):
        lab = label_subset(train.labels, args.labels, seed)
        y = train.labels[lab].astype(np.int64)
        unlabeled = np.ones(len(z), dtype=bool)
        unlabeled[lab] = False
        for peer in args.peers:
            if peer == "sklearn" and i >= args.sklearn_seeds:
                continue
            started = time.perf_counter()
            pseudo = PEERS[peer](z, lab, y, args.neighbors)
            seconds = time.perf_counter() - started
            right = float((pseudo[unlabeled] == train.labels[unlabeled]).mean())
            results[peer].append((seconds, right))
            print(f"draw {seed}  {peer:9s} {seconds:7.1f} s  pseudo-labels right {right:.2%}")
    base = statistics.mean(s for s, _ in results["mnistlab"]) if results.get("mnistlab") else 0
    print("\n| peer | draws | seconds (mean) | x mnistlab | pseudo-labels right (mean) |")
    print("|---|---:|---:|---:|---:|")
    for peer, rows in results.items():
        if not rows:
            continue
        seconds = statistics.mean(s for s, _ in rows)
        ratio = f"{seconds / base:.1f}x" if base else ""
        right = statistics.mean(r for _, r in rows)
        print(f"| {peer} | {len(rows)} | {seconds:.1f} | {ratio} | {right:.2%} |")


if __name__ == "__main__":
    main()
