"""GPT-style pretraining: next-token prediction over quantized pixel patches.

An image becomes a sequence of tokens: each ``p x p`` patch is replaced by the index of its
nearest entry in a codebook of ``codebook_size`` patches (k-means on training patches, no
labels). The sequence fed to the causal transformer is ``[prefix, t_1, ..., t_L]``: the prefix
is the digit (class) token for class-conditional models, or the "no class" token. The model
learns ``p(t_i | prefix, t_1..t_{i-1})`` with cross-entropy; sampling token by token and
decoding each token back to its codebook patch draws new images.

A model pretrained with ``conditional=False`` never reads labels (every prefix is "no class").
With ``conditional=True`` the training labels choose the prefix (a fraction ``uncond_prob`` of
the images keeps "no class", so the model can also sample unconditionally).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mnistlab.models.transformer import GPTModel, patchify, unpatchify


def fit_codebook(
    images: torch.Tensor,
    patch_size: int,
    size: int,
    *,
    seed: int = 0,
    iterations: int = 15,
    max_patches: int = 200_000,
) -> torch.Tensor:
    """k-means codebook ``(size, p*p)`` of the images' patches (pixels in [0, 1]).

    Args:
        images: float ``(N, 1, 28, 28)`` in [0, 1] (or uint8, scaled here).
        patch_size: the patch side ``p``.
        size: number of codebook entries.
        seed: fixes the sample of patches and the initial centres.
        iterations: Lloyd iterations.
        max_patches: patches sampled for the fit (bounds time and memory).

    Returns:
        The centres, sorted by mean brightness (entry 0 is the darkest: the empty background).
    """
    if images.dtype == torch.uint8:
        images = images.float() / 255
    patches = patchify(images, patch_size).reshape(-1, patch_size**2)
    generator = torch.Generator().manual_seed(seed)
    if len(patches) > max_patches:
        patches = patches[torch.randperm(len(patches), generator=generator)[:max_patches]]
    # Many patches are pure background: deduplicate before picking the initial centres.
    unique = torch.unique(patches, dim=0)
    init = unique[torch.randperm(len(unique), generator=generator)[: min(size, len(unique))]]
    centres = torch.zeros(size, patches.shape[1])
    centres[: len(init)] = init
    for _ in range(iterations):
        assign = torch.cdist(patches, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, patches)
        counts = torch.bincount(assign, minlength=size).float().unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    return centres[centres.mean(1).argsort()].contiguous()


def tokenize(images: torch.Tensor, codebook: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Images (uint8 or float in [0, 1]) -> token ids ``(N, L)``: nearest codebook entries."""
    if images.dtype == torch.uint8:
        images = images.float() / 255
    patches = patchify(images, patch_size)
    flat = patches.reshape(-1, patches.shape[-1])
    ids = torch.cdist(flat, codebook.to(flat)).argmin(1)
    return ids.reshape(patches.shape[0], patches.shape[1])


def detokenize(tokens: torch.Tensor, codebook: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Token ids ``(N, L)`` -> images ``(N, 1, 28, 28)`` in [0, 1] (codebook patches)."""
    return unpatchify(codebook.to(tokens.device)[tokens], patch_size)


def gpt_loss(model: GPTModel, tokens: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats per token) of image ``tokens`` ``(N, L)`` after
    ``prefixes`` ``(N,)`` (prefix ids counted from 0: class c, or ``num_prefixes - 1``)."""
    prefix_ids = (model.vocab_size + prefixes).unsqueeze(1)
    sequence = torch.cat([prefix_ids, tokens], dim=1)
    logits = model(sequence[:, :-1])  # position i predicts token i + 1
    return F.cross_entropy(logits.float().reshape(-1, model.vocab_size), tokens.reshape(-1))


@torch.no_grad()
def sample_tokens(
    model: GPTModel,
    prefixes: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one image's tokens ``(N, L)`` per prefix, one token at a time.

    Args:
        model: a trained :class:`GPTModel` (eval mode is set here).
        prefixes: ``(N,)`` prefix indices (class, or ``num_prefixes - 1`` for "no class").
        temperature: divides the logits (< 1: safer, more typical samples).
        top_k: sample only among the ``top_k`` most likely tokens (None: all).
        generator: a CPU generator for reproducible samples.
    """
    model.eval()
    device = model.head.weight.device
    sequence = (model.vocab_size + prefixes.to(device)).unsqueeze(1)
    for _ in range(model.config.num_patches):
        logits = model(sequence)[:, -1].float() / max(temperature, 1e-6)
        if top_k is not None and top_k < logits.shape[-1]:
            cutoff = logits.topk(top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < cutoff, float("-inf"))
        probs = torch.softmax(logits, dim=-1).cpu()
        nxt = torch.multinomial(probs, 1, generator=generator).to(device)
        sequence = torch.cat([sequence, nxt], dim=1)
    return sequence[:, 1:]
