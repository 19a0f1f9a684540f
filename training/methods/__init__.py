"""Ways to make images unlearnable, all within the same L∞ budget ε (8/255): the methods of ``training.benchmark``.

A method protects uint8 NHWC image tensors and returns uint8 NHWC tensors that differ from them by at most
round(ε·255) levels per pixel. ``fit`` protects a training set, first learning whatever the method needs (a
surrogate classifier, a generator); ``perturb`` then protects new images with what ``fit`` learned.
``METHODS`` is the registry: a name maps to a class's ``from_options``, which reads the benchmark's options
(ε, seed, surrogate, budgets). A new method is one class and one line there.

- ``Clean`` (``base``): no noise, the reference.
- ``UniformNoise`` (``noise``): sample-wise uniform noise in [-ε, ε], the control that should barely hurt
  (Huang et al., "Unlearnable Examples: Making Personal Data Unexploitable", ICLR 2021).
- ``ClasswiseNoise`` (``noise``): one uniform noise pattern per class (Huang et al., ICLR 2021);
  ``classwise-sign`` is one pattern of ±ε per pixel and class, random noise at the full budget, as the
  generators' noise is.
- ``PatchNoise`` (``noise``): class-wise colour patches, tiled, in the style of the synthetic linearly separable
  perturbations of Yu et al., "Availability Attacks Create Shortcuts", KDD 2022.
- ``ErrorMinimizingNoise`` (``surrogates``): EM, sample-wise error-minimizing noise from a min-min bi-level
  optimisation (Huang et al., ICLR 2021).
- ``TargetedAdversarialPoison`` (``surrogates``): TAP, targeted PGD toward another class, through differentiable
  crop and flip, against a surrogate trained on clean data (Fowl et al., "Adversarial Examples Make Strong
  Poisons", NeurIPS 2021).
- ``ConfounderGAN`` / ``TrainedConfounderGAN`` (``generators``): the generator of this repo (Tian et al.,
  "ConfounderGAN: Protecting Image Data Privacy with Causal Confounder", NeurIPS 2022, arXiv 2212.01767),
  shipped (pre-trained), trained in the run by ``training.gan.train_generator``, or the shipped keyed one
  fine-tuned in the run on the images it protects (``confounder-keyed-tuned``).

EM, TAP and the trained generator learn inside the run, with full-resolution surrogates. Their settings (rounds,
epochs, steps) are fields set by the benchmark's ``--options``; ``method_budget`` gives each the same budget in
CPU-seconds (``CpuBudget``), within which it stops early or takes fewer steps.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Callable
from functools import partial

from modeling_confounder import DEFAULT_MODEL

from .base import Clean, Method, SurrogateWork, device, pgd_step_size
from .generators import ConfounderGAN, TrainedConfounderGAN
from .noise import ClasswiseNoise, PatchNoise, UniformNoise
from .surrogates import CpuBudget, ErrorMinimizingNoise, SurrogateMethod, TargetedAdversarialPoison

__all__ = ["METHODS", "TRANSFERABLE", "ClasswiseNoise", "Clean", "ConfounderGAN", "CpuBudget",
           "ErrorMinimizingNoise", "Method", "PatchNoise", "SurrogateMethod", "SurrogateWork",
           "TargetedAdversarialPoison", "TrainedConfounderGAN", "UniformNoise", "create_method", "device",
           "pgd_step_size"]

# The registry: name -> (options, num_classes) -> Method.
METHODS: dict[str, Callable[[Namespace, int], Method]] = {
    "clean": Clean.from_options,
    "random": UniformNoise.from_options,
    "classwise": ClasswiseNoise.from_options,
    "classwise-sign": partial(PatchNoise.from_options, patch_size=1),
    "patch": PatchNoise.from_options,
    "em": ErrorMinimizingNoise.from_options,
    "tap": TargetedAdversarialPoison.from_options,
    "confounder": ConfounderGAN.from_options,
    "confounder-label-free": partial(ConfounderGAN.from_options, use_labels=False),
    "confounder-keyed": partial(ConfounderGAN.from_options, model=DEFAULT_MODEL),
    "confounder-trained": TrainedConfounderGAN.from_options,
    "confounder-keyed-tuned": partial(TrainedConfounderGAN.from_options, model=DEFAULT_MODEL),
}
TRANSFERABLE = ("em", "tap", "confounder-trained")  # the methods with a surrogate to swap


def create_method(name: str, options: Namespace, num_classes: int) -> Method:
    """The method registered as ``name``, set by the benchmark's ``options``."""
    return METHODS[name](options, num_classes)
