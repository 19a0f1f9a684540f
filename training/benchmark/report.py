"""One cell's experiment and what the report holds about all of them: metrics, sanity rows, settings, versions."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from functools import partial
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
from scipy.stats import rankdata

from training.data import ImageClassificationData
from training.defenses import Defense, chain, resized_crop
from training.gan import split_surrogate
from training.models import architecture
from training.pretrained import PRETRAINED_VICTIMS
from training.transformers_models import TRANSFORMERS_VICTIMS
from training.victim import hardware_summary, logits, train_victim, train_with_trainer

from .plan import Cell
from .protocols import METHOD_OPTIONS, OPTIONS

SANITY_MARGIN = 0.10  # "barely hurts" and "bites" are judged against clean accuracy with this margin


class ModelCatcher:
    """A batch transform that keeps the model it is called with: ``train_victim`` returns numbers only, and
    the benchmark also needs class probabilities (per-class accuracy, AUC) from the trained model."""

    def __init__(self, transform: Callable | None = None) -> None:
        self.transform = transform
        self.model: torch.nn.Module | None = None

    def __call__(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        self.model = model
        if self.transform is None:
            return images, labels
        return self.transform(model, images, labels, generator)


def roc_auc(probabilities: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC by the Mann–Whitney rank statistic: of class 1 for two classes, else the one-vs-rest mean."""
    classes = [1] if probabilities.shape[1] == 2 else range(probabilities.shape[1])
    scores = []
    for k in classes:
        positive = labels == k
        positives, negatives = positive.sum(), (~positive).sum()
        if positives and negatives:
            ranks = rankdata(probabilities[:, k])
            scores.append((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))
    return float(np.mean(scores)) if scores else None


def run_cell(cell: Cell, defense: Defense, protected: torch.Tensor | None, train: ImageClassificationData,
             validation: ImageClassificationData | None, test: ImageClassificationData, args: argparse.Namespace,
             progress: bool = True) -> dict:
    """Trains and tests one victim; ``protected`` is the method's training set, None for clean data. The
    clean ``validation`` images (None: none) give the per-epoch history; the test images are seen once."""
    images, labels = defense.training_set(train.images, protected, train.labels, cell.seed)

    def as_scraper_sees(images: torch.Tensor) -> torch.Tensor:  # a gray model is tested on gray images
        return defense.data_transform(images) if defense.on_test_images else images

    test_images = as_scraper_sees(test.images)
    watched = None if validation is None else (as_scraper_sees(validation.images), validation.labels)
    epochs = args.victim_epochs[cell.victim]
    if cell.victim in TRANSFORMERS_VICTIMS:  # its own crop, in the Trainer's data pipeline
        result, model = train_with_trainer(cell.victim, images, labels, test_images, test.labels, train.num_classes,
                                           epochs, watched, cell.seed, args.crop_scale, progress=progress)
    else:
        crop = None if args.crop_scale is None else partial(resized_crop, scale=args.crop_scale)
        catcher = ModelCatcher(chain(crop, defense.batch_transform))
        pretrained = cell.victim in PRETRAINED_VICTIMS and args.pretrained_learning_rate is not None
        result = train_victim(cell.victim, f"{cell.method}/{cell.defense}", images, labels, test_images,
                              test.labels, train.num_classes, epochs, args.batch_size,
                              args.pretrained_learning_rate if pretrained else args.learning_rate, cell.seed,
                              progress=progress, batch_transform=catcher,
                              bf16=cell.victim in args.bf16_victims, validation=watched,
                              input_layer=None if defense.input_layer is None else defense.input_layer())
        model = catcher.model
    probabilities = logits(model, test_images).softmax(1).numpy()
    test_labels = test.labels.numpy()
    correct = probabilities.argmax(1) == test_labels
    class_acc = [float(correct[test_labels == k].mean()) if (test_labels == k).any() else None
                 for k in range(train.num_classes)]
    run = {"method": cell.method, "victim": cell.victim, "defense": cell.defense, "seed": cell.seed,
           "test_acc": result.test_acc, "balanced_test_acc": result.balanced_test_acc,
           "validation_acc": None if validation is None else result.history[-1],
           "best_test_acc": result.best_test_acc, "seconds": result.seconds, "train_acc": result.train_acc,
           "history": result.history, "auc": roc_auc(probabilities, test_labels), "class_acc": class_acc,
           "n_train": len(labels), "bf16": result.bf16}
    if defense.protected_class is not None:
        others = test_labels != defense.protected_class
        run.update(protected_class=defense.protected_class,
                   protected_class_acc=class_acc[defense.protected_class],
                   other_classes_acc=float(correct[others].mean()))
    if defense.transfer:
        run["surrogate"] = args.transfer_surrogate
    return run


def mean_and_error(values: list[float]) -> tuple[float, float | None]:
    """The mean and its standard error (sample standard deviation / √n; None for a single value)."""
    mean = float(np.mean(values))
    return mean, (float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None)


def headline(report: dict) -> str:
    """The runs' key that the tables and sanity rows show: balanced or plain test accuracy."""
    return "balanced_test_acc" if report.get("balanced") else "test_acc"


def headline_name(report: dict) -> str:
    """What ``headline`` is, in words, for table notes and axis labels."""
    return "balanced accuracy" if report.get("balanced") else "accuracy"


def seed_values(report: dict, key: str | None = None) -> dict[tuple[str, str, str], list[float]]:
    """Each (method, victim, defense)'s ``key`` (default: the ``headline``) over its victim seeds, in the runs'
    order."""
    key = key or headline(report)
    values: dict[tuple[str, str, str], list[float]] = {}
    for run in report["runs"]:
        values.setdefault((run["method"], run["victim"], run["defense"]), []).append(run[key])
    return values


def sanity_checks(report: dict, clean_floor: float | None = None) -> list[tuple[str, bool, str]]:
    """The rows that make a report trustworthy, as (name, passed, detail), from the runs without defense,
    each judged on the mean over the victim seeds.

    For every victim with a clean run: it learns (≥ ``clean_floor``, default ``report["clean_floor"]``, and
    above the majority-class rate); sample-wise random noise barely hurts (at most ``SANITY_MARGIN`` below
    clean); the known shortcuts, EM and LSP-style patches, bite (at least ``SANITY_MARGIN`` below clean) on
    victims trained from scratch. Pretrained victims get no "bites" rows: that these noises move a fine-tuned
    model or a linear probe is a finding of the run, not a check of the harness. Rows whose runs are missing are
    left out.
    """
    floor = report["clean_floor"] if clean_floor is None else clean_floor
    accuracy = {(method, victim): float(np.mean(values))
                for (method, victim, defense), values in seed_values(report).items() if defense == "none"}
    checks = []
    for victim in dict.fromkeys(run["victim"] for run in report["runs"]):
        clean = accuracy.get(("clean", victim))
        if clean is None:
            continue
        checks.append((f"clean {victim} learns", clean >= floor, f"{clean:.1%} (needs ≥ {floor:.0%})"))
        if report.get("majority_rate") is not None:
            checks.append((f"clean {victim} beats the majority class", clean > report["majority_rate"],
                           f"{clean:.1%} vs {report['majority_rate']:.1%}"))
        for method, name, bites in (("random", "sample-wise random noise barely hurts", False),
                                    ("em", "EM bites", True), ("patch", "LSP-style patch noise bites", True)):
            if (method, victim) in accuracy and not (bites and victim in PRETRAINED_VICTIMS):
                drop = clean - accuracy[(method, victim)]
                passed = drop >= SANITY_MARGIN if bites else drop <= SANITY_MARGIN
                needs = f"needs {'≥' if bites else '≤'} {SANITY_MARGIN * 100:.0f} points lower"
                checks.append((f"{name} ({victim})", passed,
                               f"{accuracy[(method, victim)]:.1%} vs clean {clean:.1%} ({needs})"))
    return checks


def settings_digest(args: argparse.Namespace) -> str:
    """A hash of everything that decides how a victim trains but its cell, its victim's epochs and bfloat16
    choice, and the protected set it trains on: runs of reports with the same digest can be reused by a rerun
    (``same_training`` checks the epochs and bfloat16 run by run, so that adding a victim keeps the others' runs;
    each run's ``protected_set`` digest covers the method's settings, so that another generator or budget
    retrains only the victims of the methods it changes)."""
    # Options left unset are left out, so that a new option does not make earlier reports unresumable.
    options = {key: getattr(args, key, None) for key in OPTIONS
               if key not in ("clean_floor", "budget_minutes", *METHOD_OPTIONS)}
    data = {key: getattr(args, key, None) for key in ("dataset_name", "train_rows", "test_rows", "resolution")}
    settings = json.dumps({**{key: value for key, value in options.items() if value is not None}, **data},
                          sort_keys=True, default=str)
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def same_training(run: dict, args: argparse.Namespace) -> bool:
    """Whether an earlier ``run`` trained its victim as ``args`` would: as many epochs (its history holds one
    accuracy per epoch), the same bfloat16 choice."""
    return (len(run["history"]) == args.victim_epochs.get(run["victim"])
            and run.get("bf16", False) == (run["victim"] in args.bf16_victims))


def victim_architectures(victims: list[str], surrogate: str) -> dict[str, dict]:
    """Each victim's family and depthwise-ness, and whether it shares the surrogate's family (white-box) or
    not (held out)."""
    own = architecture(split_surrogate(surrogate)[0])["family"]
    return {victim: {**(found := architecture(victim)), "white_box": found["family"] == own}
            for victim in victims}


def package_versions() -> dict[str, str]:
    names = ("confounder-gan", "torch", "timm", "transformers", "diffusers", "accelerate", "datasets", "numpy",
             "scikit-image", "pillow", "matplotlib")

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:  # importable from a checkout without being installed
            return "not installed"

    return {"python": sys.version.split()[0], **{name: installed(name) for name in names}}


def new_report(args: argparse.Namespace, train: ImageClassificationData, validation: ImageClassificationData | None,
               test: ImageClassificationData, estimate: dict[str, float], cached: list[str]) -> dict:
    """The report before any victim: the run's data, settings, machine and versions."""
    test_labels = test.labels.numpy()
    return {"protocol": args.protocol, "dataset": args.dataset_name, "train_rows": args.train_rows,
            "test_rows": args.test_rows, "n_train": len(train.labels), "n_test": len(test.labels),
            "n_validation": 0 if validation is None else len(validation.labels),
            "victim_seeds": args.victim_seeds, "method_budget": args.method_budget, "balanced": bool(args.balanced),
            "photos": bool(args.photos), "crop_scale": args.crop_scale, "validation_split": args.validation_split,
            "architectures": victim_architectures(args.victims, args.surrogate),
            "settings_digest": settings_digest(args),
            "num_classes": train.num_classes,
            "majority_rate": float(np.bincount(test_labels).max() / len(test_labels)),
            "epsilon": args.epsilon / 255, "epsilon_levels": round(args.epsilon),
            "epochs": args.victim_epochs, "bf16_victims": args.bf16_victims,
            "victims": args.victims, "workers": args.workers, "hardware": hardware_summary(),
            "versions": package_versions(), "command": args.command, "clean_floor": args.clean_floor,
            "estimate": estimate, "surrogate": args.surrogate, "cached": cached,
            "runs": [], "skipped": [], "quality": {}, "speed": {}}
