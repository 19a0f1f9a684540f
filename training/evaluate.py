"""Does protection work? Train timm victims on clean and on protected images, test them on clean images.

ConfounderGAN (Tian et al., NeurIPS 2022, arXiv 2212.01767) succeeds when a victim trained from scratch on the
protected training set does badly on the *clean* test split, while the same victim trained on the clean training
set does well. Reports final and best clean test accuracy per victim and setting, plus PSNR, SSIM and max |δ| of
the protected set; prints a table and writes JSON.

Settings: ``clean``; ``labels`` (the generator is given each image's true label, the strongest path);
``owner`` (one code for every image); ``label-free`` (no label: "fast encryption" of new, unlabeled images).
A keyed generator protects with owner keys instead: ``labels`` gives each class its own key derived from a secret,
``owner`` one key for every image; the secret is new for each victim seed (``evaluation_secret``), so every seed
measures keys the generator never saw.

CIFAR-10 at 32×32, 10,000 training images the generator saw, 2,000 test images, two victims:

    python -m training.evaluate --dataset_name ../shared/data/cifar10 \
        --model modeling_confounder/cifar10_model --train_rows 0:10000 --test_rows 0:2000 \
        --victims test_resnet mobilenetv3_small_100 --settings clean labels label-free \
        --epochs 10 --output_json results/eval_seen.json

Use ``--train_rows 25000:35000`` for images the default generator never saw.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from modeling_confounder import DEFAULT_MODEL, ConfounderGenerator
from modeling_confounder.images import to_float
from modeling_confounder.pipeline import is_keyed, protect

from .data import add_data_arguments, load_train_and_test
from .models import weights_digest
from .victim import (
    add_victim_arguments,
    bf16_victims_error,
    hardware_summary,
    protection_quality,
    record_run,
    train_victim,
)

SETTINGS = ("clean", "labels", "owner", "label-free")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the generator to evaluate (folder or Hub id)")
    parser.add_argument("--epsilon", type=float, default=None,
                        help="noise bound in pixel levels out of 255 (default: the model's)")
    parser.add_argument("--owner_code", type=int, default=0, help="the code used by the 'owner' setting")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=["clean", "labels", "label-free"],
                        help="the training sets the victims learn from: clean, or protected with each image's "
                             "label, one owner code, or no label")
    add_victim_arguments(parser, ["test_resnet", "mobilenetv3_small_100"])
    parser.add_argument("--output_json", type=Path, default=Path("results/unlearnability.json"),
                        help="the report, rewritten after each victim")
    args = parser.parse_args(argv)
    if error := bf16_victims_error(args.bf16_victims, args.victims):
        parser.error(error)
    args.command = shlex.join(["python", "-m", "training.evaluate", *(sys.argv[1:] if argv is None else argv)])
    return args


def evaluation_secret(seed: int) -> str:
    """The owner's secret a keyed generator protects with for victim seed ``seed``: fixed, so that a report can be
    regenerated, and never seen in training, which draws random key codes instead of hashing keys."""
    return f"evaluation secret {seed}"


def protected_images(generator: ConfounderGenerator, images: np.ndarray, labels: torch.Tensor, setting: str,
                     owner_code: int, epsilon: float | None, seed: int) -> np.ndarray:
    """``images`` protected as ``setting`` says: with their labels, one owner code (or key), or label-free."""
    keyed = is_keyed(generator)
    if keyed and setting == "label-free":
        raise ValueError("a keyed generator has no label-free path: evaluate it with the labels or owner setting")
    given = {"labels": labels.tolist(), "owner": None if keyed else owner_code, "label-free": None}[setting]
    key = evaluation_secret(seed) if keyed else None
    return protect(generator, images, labels=given, key=key, epsilon=epsilon, progress=True)


@torch.inference_mode()
def label_agreement(generator: ConfounderGenerator, images: np.ndarray, labels: torch.Tensor) -> float | None:
    """How often the label-free path guesses the true label (None without a label predictor)."""
    if generator.label_predictor is None:
        return None
    guesses = [generator.label_predictor(to_float(torch.from_numpy(chunk))).argmax(1)
               for chunk in np.array_split(images, max(1, len(images) // 1000))]
    return (torch.cat(guesses) == labels).float().mean().item()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    train, test = load_train_and_test(args)
    generator = None
    if any(setting != "clean" for setting in args.settings):
        generator = ConfounderGenerator.from_pretrained(args.model)
    epsilon = None if args.epsilon is None else args.epsilon / 255
    report = {"dataset": args.dataset_name, "train_rows": args.train_rows, "test_rows": args.test_rows,
              "n_train": len(train.labels), "n_test": len(test.labels), "generator": str(args.model),
              "generator_weights": weights_digest(generator) if generator else None,
              "epsilon": (epsilon or (generator.config.epsilon if generator else 0)) * 255,
              "epochs": args.epochs, "hardware": hardware_summary(), "command": args.command, "quality": {},
              "protect_seconds": {}, "runs": []}
    clean = train.images.numpy()
    made: dict[tuple[str, int | None], torch.Tensor] = {}

    def training_images(setting: str, seed: int) -> torch.Tensor:
        """The training set of a setting (protected once, or once per seed for a keyed generator's secrets)."""
        key = (setting, seed if generator is not None and is_keyed(generator) else None)
        if setting == "clean" or key in made:
            return train.images if setting == "clean" else made[key]
        started = time.perf_counter()
        protected = protected_images(generator, clean, train.labels, setting, args.owner_code, epsilon, seed)
        report["protect_seconds"][setting] = time.perf_counter() - started
        report["quality"][setting] = protection_quality(clean, protected)
        if setting == "label-free":
            report["label_agreement"] = label_agreement(generator.cpu(), clean, train.labels)
        made[key] = torch.from_numpy(protected)
        return made[key]

    for setting in args.settings:
        for victim in args.victims:
            for seed in args.seeds:
                images = training_images(setting, seed)
                result = train_victim(victim, setting, images, train.labels, test.images, test.labels,
                                      train.num_classes, args.epochs, args.batch_size, args.learning_rate, seed,
                                      bf16=victim in args.bf16_victims)
                record_run(report, result, seed, args.output_json)
                print(f"{victim:24s} {setting:11s} seed {seed} test {result.test_acc:6.1%} "
                      f"(best {result.best_test_acc:6.1%}) train {result.train_acc:6.1%}  {result.seconds:5.0f}s",
                      flush=True)
    print(format_table(report))
    return report


def format_table(report: dict) -> str:
    """One row per victim run; with several seeds, then the mean and range of each victim and setting."""
    lines = ["| victim | setting | seed | clean test acc (final) | best | train acc | PSNR | SSIM | max abs δ |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_cell: dict[tuple[str, str], list[float]] = {}
    for run in report["runs"]:
        quality = report["quality"].get(run["setting"])
        extra = (f"{quality['psnr']:.1f} dB | {format_ssim(quality['ssim'])} | {quality['linf_pixels']}/255"
                 if quality else "– | – | –")
        lines.append(f"| {run['victim']} | {run['setting']} | {run.get('seed', '–')} | {run['test_acc']:.1%} | "
                     f"{run['best_test_acc']:.1%} | {run['train_acc']:.1%} | {extra} |")
        by_cell.setdefault((run["victim"], run["setting"]), []).append(run["test_acc"])
    if any(len(accuracies) > 1 for accuracies in by_cell.values()):
        lines += ["", "| victim | setting | seeds | mean clean test acc (final) | lowest | highest |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {victim} | {setting} | {len(accuracies)} | {np.mean(accuracies):.1%} | {min(accuracies):.1%} "
                  f"| {max(accuracies):.1%} |" for (victim, setting), accuracies in by_cell.items()]
    return "\n".join(lines)


def format_ssim(ssim: float | None) -> str:
    """SSIM to three decimals, or "–" for images too small for its window."""
    return "–" if ssim is None else f"{ssim:.3f}"


if __name__ == "__main__":
    main()
