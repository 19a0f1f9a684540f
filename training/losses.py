"""The ConfounderGAN objective (Tian et al., NeurIPS 2022, arXiv 2212.01767), term by term.

The generator G adds noise δ = G(x, y), |δ| ≤ ε, so that a classifier trained on (x + δ, y) learns the easy
δ → y shortcut and fails on clean images. Tensors are NCHW float in [0, 1]; T is what a victim does to an image
before learning from it (a scraper's transforms, then crop and flip). Each step:

1. the helpers learn on the current noise, detached from G:
   - every surrogate classifier f: CE(f(T(x + δ)), y);
   - the noise head h: CE(h(δ / ε), y);
   - the discriminator D: softplus(−D(x)) + softplus(D(x + δ)) (clean is real, protected is fake);
2. the generator learns through all three:

   L_G = w_min_min · CE(f(T(x + δ)), y)     error-minimising "min-min" term (Huang et al., ICLR 2021): protected
                                            images must be easy to fit, so a victim fits the noise (averaged over
                                            the surrogates)
       + w_noise · CE(h(δ / ε), y)          δ alone must predict y: the confounder carries the label
       + w_adv · softplus(−D(x + δ))        non-saturating GAN term: x + δ must look like a clean image.

A keyed generator (owner keys instead of classes) is trained with a fresh random key for each class of every
batch, and y is then "which of this batch's keys": f and h are ``models.KeyReader``s that score the input against
every key of the batch (``keys``), so the shortcut has to work for any key, not for ten remembered ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LossWeights:
    """w_min_min, w_noise and w_adv of L_G."""

    min_min: float = 1.0
    noise_head: float = 1.0
    adversarial: float = 0.05


def logits(model: nn.Module, inputs: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
    """A classifier's logits, or a ``KeyReader``'s scores against this batch's ``keys``."""
    return model(inputs) if keys is None else model(inputs, keys)


def helper_loss(surrogates: Sequence[nn.Module], head: nn.Module, augmented: torch.Tensor, noise: torch.Tensor,
                epsilon: float, labels: torch.Tensor, keys: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Σ_f CE(f(T(x + δ)), y) + CE(h(δ / ε), y) on detached inputs (only the helpers learn from it), with the
    surrogates' and the head's logits for the accuracy logs."""
    surrogate_logits = [logits(surrogate, augmented.detach(), keys) for surrogate in surrogates]
    head_logits = logits(head, noise.detach() / epsilon, keys)
    loss = sum(F.cross_entropy(logits, labels) for logits in surrogate_logits) + F.cross_entropy(head_logits, labels)
    return loss, surrogate_logits, head_logits


def discriminator_loss(discriminator: nn.Module, clean: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """softplus(−D(x)) + softplus(D(x + δ)), with x + δ detached. One forward pass for both halves: DDP allows
    one forward per backward."""
    real_logits, fake_logits = discriminator(torch.cat([clean, protected.detach()])).chunk(2)
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(surrogates: Sequence[nn.Module], head: nn.Module, discriminator: nn.Module,
                   augmented: torch.Tensor, noise: torch.Tensor, protected: torch.Tensor, epsilon: float,
                   labels: torch.Tensor, weights: LossWeights, keys: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_G, and its three terms by name (``min_min``, ``noise_head``, ``adversarial``).

    ``augmented`` is T(x + δ), ``protected`` is x + δ; all carry G's gradient."""
    terms = {
        "min_min": sum(F.cross_entropy(logits(surrogate, augmented, keys), labels)
                       for surrogate in surrogates) / len(surrogates),
        "noise_head": F.cross_entropy(logits(head, noise / epsilon, keys), labels),
        "adversarial": F.softplus(-discriminator(protected)).mean(),
    }
    total = (weights.min_min * terms["min_min"] + weights.noise_head * terms["noise_head"]
             + weights.adversarial * terms["adversarial"])
    return total, terms
