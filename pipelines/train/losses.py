"""Losses for tuning CLIP on (masked crop, noun) pairs. Text embeddings are frozen inputs.

* :func:`contrastive_loss` — OVSeg's: CLIP's symmetric InfoNCE over the pairs of the (global)
  batch; a crop's positive is its own noun text, every other pair's text is a negative, also when
  it is the *same* noun.
* :func:`vocab_ce_loss` — cross-entropy of each crop over the batch vocabulary (unique nouns):
  crops of the same noun share one class and are never each other's negatives. With a frozen text
  tower, the image→text half of the contrastive loss is this cross-entropy with every logit shifted
  by log(batch count of its noun) plus a floor of log(count of the true noun) — a batch-frequency
  prior that favours frequent nouns — and its text→image half asks each copy of a repeated noun to
  pick *its own* crop among identical-text crops, a contradictory target. Vocab CE is the task
  OVSeg solves at test time (classify a masked crop over a vocabulary). It is the default.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def vocab_ce_loss(
    image_features: torch.Tensor,
    nouns: Sequence[str],
    vocab: Sequence[str],
    *,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of crops over a vocabulary.

    Args:
        image_features: ``[B,D]`` L2-normalised crop features (this process's crops).
        nouns: ``B`` nouns of the crops, each in ``vocab``.
        vocab: ``K`` unique nouns (the union over all processes, same order everywhere).
        text_features: ``[K,D]`` L2-normalised embeddings of ``vocab``.
        logit_scale: scalar log temperature (``exp`` is applied here).

    Returns:
        mean loss (scalar) and top-1 accuracy on the batch (scalar, no grad).
    """
    index = {n: i for i, n in enumerate(vocab)}
    labels = torch.tensor([index[n] for n in nouns], device=image_features.device)
    logits = logit_scale.exp() * image_features.float() @ text_features.float().T  # [B,K]
    loss = F.cross_entropy(logits, labels)
    acc = (logits.argmax(-1) == labels).float().mean().detach()
    return loss, acc


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric contrastive loss; pair ``i`` is (``image_features[i]``, ``text_features[i]``).

    Args:
        image_features: ``[N,D]`` L2-normalised (gathered over processes).
        text_features: ``[N,D]`` L2-normalised, one per pair (duplicates for repeated nouns).
        logit_scale: scalar log temperature.

    Returns:
        mean of the image→text and text→image cross-entropies, and image→text top-1 accuracy
        counting a prediction of an identical noun embedding as correct.
    """
    logits = logit_scale.exp() * image_features.float() @ text_features.float().T  # [N,N]
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    with torch.no_grad():
        pred = logits.argmax(-1)
        acc = (text_features[pred] == text_features).all(-1).float().mean()
    return loss, acc
