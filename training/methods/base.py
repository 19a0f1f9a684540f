"""What every method shares: the ``Method`` base with its hashed settings, the device, the PGD step size rule and
``SurrogateWork`` for time estimates; ``Clean``, the reference without noise."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from argparse import Namespace
from dataclasses import dataclass, fields
from typing import ClassVar, NamedTuple

import torch

from modeling_confounder.pipeline import default_device
from training.gan import SURROGATE_STEMS, split_surrogate


def device() -> torch.device:
    return torch.device(default_device())


def pgd_step_size(epsilon_levels: float, steps: int) -> float:
    """2.5·ε/steps: PGD can cross the ε-ball within one call (Madry et al., ICLR 2018)."""
    return 2.5 * (epsilon_levels / 255) / steps


def surrogate_stem(spec: str) -> tuple[str, bool | None]:
    """A method's surrogate, ``NAME`` or ``NAME:STEM`` as ``training.train --surrogate_model`` takes it, as (timm
    name, ``create_classifier``'s ``small_input_stem``)."""
    name, stem = split_surrogate(spec)
    return name, SURROGATE_STEMS[stem]


class SurrogateWork(NamedTuple):
    """What ``fit`` costs at most: forward+backward image passes through a timm model (for time estimates)."""

    model: str
    small_input_stem: bool | None
    passes: float


@dataclass
class Method(ABC):
    """Base: the fields are the settings that determine the output; ``settings()`` is what cache keys hash."""

    pretrained: ClassVar[bool] = False  # True when what protects was trained before the run (a shipped generator)

    epsilon: float = 8 / 255
    seed: int = 0

    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Protects a training set (uint8 NHWC); methods that learn something learn it here."""
        return self.perturb(images, labels)

    @abstractmethod
    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Protects new uint8 NHWC images with what ``fit`` learned."""

    def settings(self) -> dict:
        hashed = {item.name: getattr(self, item.name) for item in fields(self)
                  if item.metadata.get("hashed", True)}
        return {"method": type(self).__name__, **hashed}

    def digest(self) -> str:
        settings = json.dumps(self.settings(), sort_keys=True, default=str)
        return hashlib.sha256(settings.encode()).hexdigest()[:16]

    def work(self, num_images: int) -> SurrogateWork | None:
        """The surrogate work of ``fit`` on ``num_images`` images; None when it trains nothing."""
        return None

    def budget_wall_seconds(self) -> float | None:
        """The wall-clock seconds ``fit`` may take under a CPU budget; None when its settings alone decide."""
        return None

    @classmethod
    def from_options(cls, options: Namespace, num_classes: int, /, **fixed: object) -> Method:
        """The method as the benchmark's options set it (``options.epsilon`` in levels out of 255)."""
        return cls(epsilon=options.epsilon / 255, seed=options.seed, **fixed)


@dataclass
class Clean(Method):
    def settings(self) -> dict:
        # The same images whatever the methods' seed and ε: another seed must not retrain the clean victims.
        return {"method": type(self).__name__}

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return images
