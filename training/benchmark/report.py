"""One cell's experiment and what the report says about all of them: metrics, sanity rows, versions, markdown."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
from scipy.stats import rankdata

from training.data import ImageClassificationData
from training.defenses import Defense
from training.models import architecture
from training.victim import hardware_summary, logits, train_victim

from .plan import Cell
from .protocols import OPTIONS

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
    catcher = ModelCatcher(defense.batch_transform)
    result = train_victim(cell.victim, f"{cell.method}/{cell.defense}", images, labels, test_images,
                          test.labels, train.num_classes, args.victim_epochs[cell.victim], args.batch_size,
                          args.learning_rate, cell.seed, progress=progress, batch_transform=catcher,
                          bf16=cell.victim in args.bf16_victims, validation=watched,
                          input_layer=None if defense.input_layer is None else defense.input_layer())
    probabilities = logits(catcher.model, test_images).softmax(1).numpy()
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


def seed_values(report: dict, key: str = "test_acc") -> dict[tuple[str, str, str], list[float]]:
    """Each (method, victim, defense)'s ``key`` over its victim seeds, in the runs' order."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for run in report["runs"]:
        values.setdefault((run["method"], run["victim"], run["defense"]), []).append(run[key])
    return values


def sanity_checks(report: dict, clean_floor: float | None = None) -> list[tuple[str, bool, str]]:
    """The rows that make a report trustworthy, as (name, passed, detail), from the runs without defense,
    each judged on the mean over the victim seeds.

    For every victim with a clean run: it learns (≥ ``clean_floor``, default ``report["clean_floor"]``, and
    above the majority-class rate); sample-wise random noise barely hurts (at most ``SANITY_MARGIN`` below
    clean); the known shortcuts, EM and LSP-style patches, bite (at least ``SANITY_MARGIN`` below clean).
    Rows whose runs are missing are left out.
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
            if (method, victim) in accuracy:
                drop = clean - accuracy[(method, victim)]
                passed = drop >= SANITY_MARGIN if bites else drop <= SANITY_MARGIN
                needs = f"needs {'≥' if bites else '≤'} {SANITY_MARGIN * 100:.0f} points lower"
                checks.append((f"{name} ({victim})", passed,
                               f"{accuracy[(method, victim)]:.1%} vs clean {clean:.1%} ({needs})"))
    return checks


def settings_digest(args: argparse.Namespace) -> str:
    """A hash of everything that decides a victim run's result but its cell: runs of reports with the same
    digest can be reused by a rerun."""
    keys = [*(key for key in OPTIONS if key not in ("clean_floor", "budget_minutes")), "dataset_name", "train_rows", "test_rows", "resolution", "victim_epochs", "bf16_victims",
            "seed", "model"]
    settings = json.dumps({key: getattr(args, key, None) for key in keys}, sort_keys=True, default=str)
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def victim_architectures(victims: list[str], surrogate: str) -> dict[str, dict]:
    """Each victim's family and depthwise-ness, and whether it shares the surrogate's family (white-box) or
    not (held out)."""
    own = architecture(surrogate)["family"]
    return {victim: {**(found := architecture(victim)), "white_box": found["family"] == own}
            for victim in victims}


def package_versions() -> dict[str, str]:
    names = ("confounder-gan", "torch", "timm", "diffusers", "accelerate", "datasets", "numpy",
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
            "victim_seeds": args.victim_seeds, "method_budget": args.method_budget,
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


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def protected_class(run: dict) -> str:
    if "protected_class" not in run:
        return "–"
    return (f"{percent(run['protected_class_acc'])} (class {run['protected_class']}; "
            f"others {percent(run['other_classes_acc'])})")


def wall_time(report: dict) -> str:
    text = (f"{report['seconds'] / 60:.0f} min (estimated at the start: "
            f"{report['estimate']['total_seconds'] / 60:.0f} min)")
    if cached := [label for label in report.get("cached", []) if label in report["speed"]]:
        minutes = sum(report["speed"][label]["generate_seconds"] for label in cached) / 60
        text += (f"; the protected sets of {', '.join(cached)} came from the cache, so the {minutes:.1f} min "
                 "it took to make them (their `generate_seconds`) are not in it")
    if resumed := report.get("resumed_runs"):
        text += (f"; {resumed} victims came from earlier runs of the same settings, which took "
                 f"{report.get('earlier_seconds', 0) / 60:.0f} min more")
    return text


def skipped_line(report: dict) -> list[str]:
    """The planned victims that --time_limit_minutes left out, as a list item (none: no line)."""
    skipped = report.get("skipped")
    if not skipped:
        return []
    if len(skipped) > 10:  # a resumable protocol cut short: say how much is left, seed by seed
        seeds = Counter(cell.get("seed", 0) for cell in skipped)
        cells = f"{len(skipped)} victims ({', '.join(f'seed {seed}: {count}' for seed, count in seeds.items())})"
    else:
        cells = ", ".join(f"{cell['method']} on {cell['victim']} ({cell['defense']})" for cell in skipped)
    return [f"- **Not run** (over `--time_limit_minutes`): {cells}."]


def victim_line(report: dict) -> str:
    """The victims: epochs, bfloat16, family, and white-box (the surrogate's family) or held out."""
    bf16 = set(report.get("bf16_victims", []))
    architectures = report.get("architectures", {})

    def describe(victim: str, epochs: int) -> str:
        found = architectures.get(victim)
        if found is None:
            return f"{victim} ({epochs} epochs)"
        side = "**white-box** (the surrogate's family)" if found["white_box"] else "held out"
        kind = f", {found['family']}{', depthwise' if found['depthwise'] else ''}, {side}"
        return f"{victim} ({epochs} epochs{', bfloat16 autocast' if victim in bf16 else ''}{kind})"

    planned = report.get("victim_seeds", [0])
    present = {run.get("seed", 0) for run in report["runs"]}
    seeds = ", ".join(str(seed) for seed in planned if seed in present)
    if not present >= set(planned):
        seeds += f" so far (of {', '.join(map(str, planned))}: the same command resumes the run)"
    line = (f"Victims, trained from scratch with crop + flip, each with seeds {seeds}: "
            + "; ".join(describe(victim, epochs) for victim, epochs in report["epochs"].items())
            + f". The surrogate of EM, TAP and the trained generator is {report['surrogate']}")
    if report.get("workers", 1) > 1:
        line += (f". {report['workers']} victims train at once, each in its own process with an equal share of "
                 "the threads")
    return line


def header_lines(report: dict) -> list[str]:
    """The title, the command and the run's data, budget, victims, machine, versions and wall time."""
    versions = ", ".join(f"{name} {value}" for name, value in report["versions"].items())
    validation = report.get("n_validation", 0)
    data = (f"`{report['dataset']}`, {report['n_train']} training images"
            + (f" (and {validation} more, the last training rows, kept clean as validation images: they choose "
               "settings, the test rows only report)" if validation else "")
            + f", {report['n_test']} test images, {report['num_classes']} classes; majority-class rate of the "
            f"test set {percent(report['majority_rate'])}")
    budget = report.get("method_budget")
    budget_line = ("" if budget is None else f" EM, TAP and the trained generator each get {budget:.0f} "
                   "CPU-seconds to make their protected set, training included.")
    return [f"# Unlearnable-example benchmark, {report['protocol']} protocol", "",
            f"Regenerate with `{report['command']}`.", "", f"- Data: {data}.",
            f"- Every method within ε = {report['epsilon_levels']}/255 (L∞).{budget_line}",
            f"- {victim_line(report)}.",
            "- Accuracy is on clean test images after the last epoch: the mean ± standard error over the seeds.",
            f"- Hardware: {report['hardware']}.", f"- Versions: {versions}.",
            f"- Wall time: {wall_time(report)}.", *skipped_line(report), ""]


def sanity_lines(report: dict) -> list[str]:
    lines = ["## Sanity", ""]
    checks = sanity_checks(report)
    if not checks:
        return lines + [("No sanity row applies: they need the clean method without defense. Include `clean` in "
                         "`--methods` and `none` in `--defenses` before trusting this report."), ""]
    return lines + ["If a row fails, fix the harness before reading anything else from this report.", "",
                    *table(["check", "result", "detail"],
                           [[name, "pass" if passed else "**FAIL**", detail] for name, passed, detail in checks])]


def mean_cell(values: list[float] | None) -> str:
    """A table cell: the mean ± standard error of a cell's seeds (– when it has none)."""
    if not values:
        return "–"
    mean, error = mean_and_error(values)
    return f"{mean:.1%}" + ("" if error is None else f" ± {error * 100:.1f}")


def cost(report: dict, label: str) -> str:
    """What making a protected set cost: CPU-seconds, or that the generator was trained before the run."""
    speed = report["speed"].get(label)
    if speed is None:
        return "none" if label.startswith("clean") else "–"
    seconds = "–" if speed.get("cpu_seconds") is None else f"{speed['cpu_seconds']:.0f}"
    return f"pre-trained, then {seconds}" if speed.get("pretrained") else seconds


def accuracy_lines(report: dict) -> list[str]:
    """The test accuracy tables: no defense (every victim, with what each set cost), each defense (the first
    victim), transfer."""
    runs = report["runs"]
    victims, methods, defenses = (list(dict.fromkeys(run[key] for run in runs))
                                  for key in ("victim", "method", "defense"))
    values = seed_values(report)

    def per_victim(chosen: list[str], defense: str, suffix: str = "") -> list[str]:
        return table(["method", "CPU-seconds to make the set", *victims],
                     [[method, cost(report, method + suffix),
                       *(mean_cell(values.get((method, victim, defense))) for victim in victims)]
                      for method in chosen])

    lines = ["## No defense", "", *per_victim(methods, "none")] if "none" in defenses else []
    if set(defenses) <= {"none", "transfer"}:
        return lines + transfer_lines(report, per_victim)
    lines += [f"## Defenses, {victims[0]}", ""]
    if any(run["method"] == "clean" and run["defense"].startswith("partial") for run in runs):
        lines += [("Under partial*N*, `clean` is the victim trained on the unprotected (100 − *N*) % alone: a "
                   "protection works there when its row is no better than that one."), ""]
    lines += table(["method", *defenses], [[method, *(mean_cell(values.get((method, victims[0], defense)))
                                                      for defense in defenses)] for method in methods])
    return lines + transfer_lines(report, per_victim)


def transfer_lines(report: dict, per_victim: Callable[..., list[str]]) -> list[str]:
    """The transfer table: the noise remade with the transfer surrogate, on every victim (none: no lines)."""
    transfer = [run for run in report["runs"] if run["defense"] == "transfer"]
    if not transfer:
        return []
    own = f" instead of {report['surrogate']}" if "surrogate" in report else ""
    return [f"## Transfer: the noise made with surrogate {transfer[0]['surrogate']}{own}", "",
            *per_victim(list(dict.fromkeys(run["method"] for run in transfer)), "transfer", "-transfer")]


def quality_lines(report: dict) -> list[str]:
    if not report["quality"]:
        return []

    def ssim(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    return ["## Image quality, cost and speed", "",
            ("CPU-seconds: this process's CPU time while the method made the training set, its training "
             "included (pre-trained generators were trained before the run: see the model card)."), "",
            *table(["protected set", "PSNR", "SSIM", "max abs δ", "CPU-seconds to make the set",
                    "wall seconds", "protect new images"],
                   [[label, f"{quality['psnr']:.1f} dB", ssim(quality["ssim"]), f"{quality['linf_pixels']}/255",
                     cost(report, label), f"{report['speed'][label]['generate_seconds']:.1f} s",
                     f"{report['speed'][label]['images_per_second']:.0f} images/s"]
                    for label, quality in report["quality"].items()])]


def format_markdown(report: dict) -> str:
    runs_table = table(["method", "victim", "defense", "seed", "test acc", "balanced", "validation acc",
                        "train acc", "AUC", "protected class acc", "seconds"],
                       [[run["method"], run["victim"], run["defense"], str(run.get("seed", 0)),
                         percent(run["test_acc"]), percent(run.get("balanced_test_acc")),
                         percent(run.get("validation_acc")), percent(run["train_acc"]),
                         "–" if run["auc"] is None else f"{run['auc']:.3f}", protected_class(run),
                         f"{run['seconds']:.0f}"] for run in report["runs"]])
    return "\n".join([*header_lines(report), *sanity_lines(report), *accuracy_lines(report),
                      *quality_lines(report), "## All runs (every seed)", "", *runs_table])
