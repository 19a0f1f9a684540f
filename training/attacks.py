"""Projected gradient descent on an additive noise δ: the attack the methods and defenses share."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def pgd(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, epsilon: float, steps: int,
        step_size: float, maximize: bool, noise: torch.Tensor | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Projected sign-gradient steps on the noise δ (Madry et al., ICLR 2018), from ``noise`` or zero.

    ``images`` are float NCHW in [0, 1]. ``maximize`` ascends the cross-entropy (an attack: adversarial
    training); otherwise it descends it toward ``targets`` (error-minimizing noise with the true labels, TAP
    with other labels). ``transform`` (differentiable, e.g. a random crop and flip drawn anew at each call) is
    applied to x + δ before the model at every step, so that δ works through it. Returns δ with |δ| ≤ ε and
    x + δ in [0, 1]; the model's parameters get no gradient.
    """
    noise = torch.zeros_like(images) if noise is None else noise.detach().clone()
    for _ in range(steps):
        noise.requires_grad_(True)
        inputs = images + noise
        loss = F.cross_entropy(model(transform(inputs) if transform else inputs), targets)
        (gradient,) = torch.autograd.grad(loss, noise)
        step = step_size * gradient.sign()
        noise = (noise.detach() + (step if maximize else -step)).clamp(-epsilon, epsilon)
        noise = (images + noise).clamp(0, 1) - images
    return noise.detach()
