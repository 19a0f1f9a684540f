"""The methods that optimise noise against a surrogate classifier trained inside the run, EM and TAP, and
``CpuBudget``, the budget in CPU-seconds that bounds them and the generator trained in the run.

Surrogates are timm models at full resolution (the automatic small-input stem, as ``training.gan`` builds them).
Without a budget the settings alone (rounds, epochs, PGD steps) decide the work; with ``budget_seconds`` a method
stops early or takes fewer steps so that ``fit`` ends within the budget's wall-clock share.
"""

from __future__ import annotations

import math
import time
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from modeling_confounder.images import add_noise
from training.attacks import pgd
from training.augmentation import crop_and_flip
from training.fitting import Optimization, fit_batches, make_optimizer, random_batches
from training.models import create_classifier
from training.victim import as_float

from .base import Method, SurrogateWork, device, pgd_step_size, surrogate_stem

PROBE_STEPS = 3  # surrogate steps TAP times, under a budget, before it sizes its schedule


class CpuBudget:
    """``seconds`` CPU-seconds from construction (None: no limit). The process keeps all
    ``torch.get_num_threads()`` threads busy, so they last ``seconds / threads`` seconds of wall clock."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    @property
    def wall_limit(self) -> float:
        return math.inf if self.seconds is None else self.seconds / torch.get_num_threads()

    def spent(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.wall_limit - self.spent()

    def affords(self, seconds_needed: float) -> bool:
        return seconds_needed <= self.left()

    def __str__(self) -> str:
        limit = "" if self.seconds is None else f" of a {self.wall_limit:.1f} s budget"
        return f"{self.spent():.1f} s{limit}"


def surrogate_classifier(spec: str, num_classes: int, channels: int, resolution: int) -> nn.Module:
    """A timm model, ``NAME`` (at full resolution at CIFAR size, like the generator's surrogates) or ``NAME:STEM``
    (``surrogate_stem``)."""
    name, small_input_stem = surrogate_stem(spec)
    return create_classifier(name, num_classes, channels, resolution, small_input_stem).to(device())


@dataclass
class SurrogateMethod(Method):
    """A method that optimises noise against a surrogate classifier (see ``surrogate_classifier``), within
    ``budget_seconds`` CPU-seconds when given."""

    num_classes: int = 10
    surrogate: str = "test_resnet"
    steps: int = 10
    step_size: float = 2 / 255
    batch_size: int = 256
    learning_rate: float = 0.1
    budget_seconds: float | None = None

    def __post_init__(self) -> None:
        surrogate_stem(self.surrogate)
        self.model: nn.Module | None = None

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        return super().from_options(options, num_classes, num_classes=num_classes, surrogate=options.surrogate,
                                    budget_seconds=getattr(options, "method_budget", None), **fixed)

    def budget_wall_seconds(self) -> float | None:
        return None if self.budget_seconds is None else CpuBudget(self.budget_seconds).wall_limit

    def new_surrogate(self, images: torch.Tensor, warmup: float | None = None, total_steps: int = 0
                      ) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """A fresh surrogate for float NCHW ``images``, its SGD optimizer and (with ``warmup``) a one-cycle
        schedule over ``total_steps``."""
        torch.manual_seed(self.seed)
        model = surrogate_classifier(self.surrogate, self.num_classes, images.shape[1], images.shape[-1])
        optimization = Optimization(learning_rate=self.learning_rate, warmup=warmup, nesterov=False)
        return model, *make_optimizer(model, optimization, total_steps)

    def train_surrogate(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                        schedule: torch.optim.lr_scheduler.LRScheduler | None, images: torch.Tensor,
                        labels: torch.Tensor, steps: int, generator: torch.Generator) -> None:
        """``steps`` steps on random batches of float NCHW ``images``, with the victims' crop and flip."""
        batches = random_batches(len(images), self.batch_size, steps, generator)
        fit_batches(model, optimizer, schedule, batches, images.__getitem__, labels, generator)

    def fitted_model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}.perturb needs a surrogate: "
                               "call fit(images, labels) first")
        return self.model


@dataclass
class ErrorMinimizingNoise(SurrogateMethod):
    """EM: sample-wise noise that makes each image *easy*, so that a victim has nothing left to learn.

    Huang et al., ICLR 2021: the min-min bi-level problem min_θ Σ min_δ L(f_θ(x + δ), y), solved by
    alternating ``train_steps`` surrogate SGD steps on the perturbed data and ``steps`` PGD steps that lower
    each image's loss, until the surrogate fits the perturbed training set (accuracy > ``stop_accuracy``), for
    ``rounds`` at most, and under a budget while it affords another round as long as the last one (the first
    always runs, so every image gets noise). The paper uses 10 train steps, 20 PGD steps of ε/10 and a
    ResNet-18.
    """

    rounds: int = 10
    train_steps: int = 10
    stop_accuracy: float = 0.99

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        return super().from_options(options, num_classes, rounds=options.em_rounds,
                                    train_steps=options.em_train_steps, steps=options.em_steps,
                                    step_size=pgd_step_size(options.epsilon, options.em_steps), **fixed)

    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        budget = CpuBudget(self.budget_seconds)
        clean = as_float(images, device())
        labels = labels.to(clean.device)
        noise = torch.zeros_like(clean)
        model, optimizer, _ = self.new_surrogate(clean)
        generator = torch.Generator().manual_seed(self.seed)
        for round_index in range(self.rounds):
            round_started = time.perf_counter()
            accuracy = self.min_min_round(model, optimizer, clean, labels, noise, generator)
            print(f"EM round {round_index + 1}/{self.rounds}: surrogate accuracy on the perturbed data "
                  f"{accuracy:.1%}, {budget}", flush=True)
            if accuracy > self.stop_accuracy or not budget.affords(time.perf_counter() - round_started):
                break
        self.model = model
        return add_noise(images, noise, self.epsilon)

    def min_min_round(self, model: nn.Module, optimizer: torch.optim.Optimizer, clean: torch.Tensor,
                      labels: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> float:
        """One round: the surrogate trains on the perturbed data, then PGD lowers each image's loss (``noise``
        is updated in place). Returns the surrogate's accuracy on the new perturbed data."""
        self.train_surrogate(model, optimizer, None, (clean + noise).clamp(0, 1), labels, self.train_steps,
                             generator)
        model.eval()
        correct = 0
        for batch in torch.arange(len(clean)).split(self.batch_size):
            noise[batch] = pgd(model, clean[batch], labels[batch], self.epsilon, self.steps, self.step_size,
                               maximize=False, noise=noise[batch])
            with torch.no_grad():
                correct += (model(clean[batch] + noise[batch]).argmax(1) == labels[batch]).sum().item()
        return correct / len(clean)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """New images: error-minimizing PGD against the final surrogate."""
        model = self.fitted_model().eval()
        clean = as_float(images, device())
        noise = pgd(model, clean, labels.to(clean.device), self.epsilon, self.steps, self.step_size,
                    maximize=False)
        return add_noise(images, noise, self.epsilon)

    def work(self, num_images: int) -> SurrogateWork:
        passes = self.rounds * (self.train_steps * self.batch_size + num_images * (self.steps + 1))
        return SurrogateWork(*surrogate_stem(self.surrogate), passes)


@dataclass
class TargetedAdversarialPoison(SurrogateMethod):
    """TAP: targeted adversarial noise toward class (y + 1) mod K, against a surrogate trained on clean data.

    Fowl et al., NeurIPS 2021: the noise carries features of a wrong class, which the victim learns as if they
    were the true one's. As in the paper, with ``augment`` each PGD step sees x + δ through a fresh random crop
    and flip (the victims' augmentation, differentiable), so the noise survives it. The paper attacks a
    well-trained ResNet-18 with 250 PGD steps. Here the surrogate trains for ``surrogate_epochs`` and PGD takes
    ``steps``; under a budget half of it trains the surrogate (at most those epochs) and the rest pays for PGD
    steps (at least 1, at most ``steps``, each larger when fewer so that they still cross the ε-ball).
    ``surrogate_steps`` and ``pgd_steps`` say what ``fit`` chose.
    """

    surrogate_epochs: int = 5
    augment: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.surrogate_steps: int | None = None
        self.pgd_steps = self.steps

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        return super().from_options(options, num_classes, surrogate_epochs=options.tap_epochs,
                                    steps=options.tap_steps,
                                    step_size=pgd_step_size(options.epsilon, options.tap_steps), **fixed)

    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        budget = CpuBudget(self.budget_seconds)
        clean = as_float(images, device())
        labels = labels.to(clean.device)
        self.surrogate_steps = self.affordable_surrogate_steps(clean, labels, budget)
        model, optimizer, schedule = self.new_surrogate(clean, warmup=0.3, total_steps=self.surrogate_steps)
        self.train_surrogate(model, optimizer, schedule, clean, labels, self.surrogate_steps,
                             torch.Generator().manual_seed(self.seed))
        self.model = model.eval()
        batches = -(-len(clean) // self.batch_size)
        self.pgd_steps = self.affordable_pgd_steps(clean[:self.batch_size], labels[:self.batch_size], budget,
                                                   batches)
        print(f"TAP: {self.surrogate_steps} surrogate steps, {self.pgd_steps} PGD steps, {budget}", flush=True)
        return self.perturb(images, labels)

    def affordable_surrogate_steps(self, clean: torch.Tensor, labels: torch.Tensor, budget: CpuBudget) -> int:
        """``surrogate_epochs`` epochs of steps; under a budget fewer if half of it affords fewer, as timed on
        ``PROBE_STEPS`` steps of a throwaway surrogate (at least 1)."""
        most = max(1, self.surrogate_epochs * len(clean) // self.batch_size)
        if self.budget_seconds is None:
            return most
        model, optimizer, _ = self.new_surrogate(clean)
        started = time.perf_counter()
        self.train_surrogate(model, optimizer, None, clean, labels, PROBE_STEPS,
                             torch.Generator().manual_seed(self.seed))
        step_seconds = (time.perf_counter() - started) / PROBE_STEPS
        return max(1, min(most, int((budget.wall_limit / 2 - budget.spent()) / step_seconds)))

    def affordable_pgd_steps(self, clean: torch.Tensor, labels: torch.Tensor, budget: CpuBudget,
                             batches: int) -> int:
        """``steps``; under a budget as many as what is left of it affords for ``batches`` batches like
        ``clean``, as timed on one PGD step on it (at least 1)."""
        if self.budget_seconds is None:
            return self.steps
        started = time.perf_counter()
        pgd(self.fitted_model(), clean, self.targets(labels), self.epsilon, 1, self.step_size, maximize=False,
            transform=self.augmentation())
        step_seconds = time.perf_counter() - started
        return max(1, min(self.steps, int(budget.left() / (step_seconds * batches))))

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels + 1) % self.num_classes

    def augmentation(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """With ``augment``, the victims' crop and flip, drawn anew at each call from a generator seeded by
        ``seed``."""
        return partial(crop_and_flip, generator=torch.Generator().manual_seed(self.seed)) if self.augment else None

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model = self.fitted_model().eval()
        transform = self.augmentation()
        step_size = self.step_size * self.steps / self.pgd_steps
        protected = []
        for batch in torch.arange(len(images)).split(self.batch_size):
            clean = as_float(images[batch], device())
            noise = pgd(model, clean, self.targets(labels[batch].to(clean.device)), self.epsilon, self.pgd_steps,
                        step_size, maximize=False, transform=transform)
            protected.append(add_noise(images[batch], noise, self.epsilon))
        return torch.cat(protected)

    def work(self, num_images: int) -> SurrogateWork:
        return SurrogateWork(*surrogate_stem(self.surrogate), num_images * (self.surrogate_epochs + self.steps))
