"""The one supervised classifier loop: crop and flip, cross-entropy, SGD or Adam under a one-cycle schedule.

Victims, the generator's label predictor and the benchmark's surrogates all train with it. The random draws come
from one ``torch.Generator`` in a fixed order, so a seed fixes a run: per batch, its indices (a permutation per
epoch with ``epoch_batches``, or a draw per step with ``random_batches``), then the crop offsets and flips, then
whatever the batch transform draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .augmentation import crop_and_flip

BatchTransform = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Optimization:
    """How a classifier's weights move: ``optimizer`` "sgd" (momentum 0.9) or "adam"; with ``warmup`` a one-cycle
    schedule whose learning rate peaks at ``learning_rate`` after that fraction of the steps, else a constant
    ``learning_rate``."""

    optimizer: str = "sgd"
    learning_rate: float = 0.05
    warmup: float | None = 0.25
    nesterov: bool = True
    weight_decay: float = 5e-4


def make_optimizer(model: nn.Module, optimization: Optimization, total_steps: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The optimizer and (with ``warmup``) the one-cycle schedule over ``total_steps`` steps."""
    if optimization.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=optimization.learning_rate, momentum=0.9,
                                    nesterov=optimization.nesterov, weight_decay=optimization.weight_decay)
    elif optimization.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=optimization.learning_rate,
                                     weight_decay=optimization.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimization.optimizer!r}: choose 'sgd' or 'adam'")
    if optimization.warmup is None:
        return optimizer, None
    # Warm-up shorter than two steps is none: OneCycleLR divides by zero on a one-step phase.
    warmup = optimization.warmup if optimization.warmup * total_steps >= 2 else 0.0
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, optimization.learning_rate, total_steps=total_steps,
                                                   pct_start=warmup)
    return optimizer, schedule


def epoch_batches(count: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch: a random permutation of ``count`` indices, in batches (the last one may be smaller)."""
    return list(torch.randperm(count, generator=generator).split(batch_size))


def random_batches(count: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` batches of indices drawn with replacement, each drawn when the step before it is done."""
    for _ in range(steps):
        yield torch.randint(count, (min(batch_size, count),), generator=generator)


def fit_batches(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
    batches: Iterable[torch.Tensor],
    images: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    generator: torch.Generator,
    batch_transform: BatchTransform | None = None,
    bf16: bool = False,
    on_step: Callable[[], object] | None = None,
) -> int:
    """Trains ``model`` on each batch of indices; returns how many of them it classified right (before the step).

    ``images(indices)`` gives the batch as float NCHW in [0, 1] on the model's device; it is then cropped and
    flipped. ``batch_transform(model, images, labels, generator) -> (images, targets)`` lets a scraper's defense
    rewrite each augmented batch (targets are class indices or probabilities; accuracy is still counted against
    ``labels``). ``bf16`` runs the forward pass under bfloat16 autocast. ``on_step`` is called after each step.
    """
    model.train()
    correct = 0
    for indices in batches:
        batch = crop_and_flip(images(indices), generator)
        truth = labels[indices].to(batch.device)
        batch, targets = batch_transform(model, batch, truth, generator) if batch_transform else (batch, truth)
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch)
            loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        correct += (logits.argmax(1) == truth).sum().item()
        if on_step is not None:
            on_step()
    return correct
