"""Does protection work? Train timm victims on clean and on protected images, test them on clean images.

ConfounderGAN (Tian et al., NeurIPS 2022) succeeds when a victim trained from scratch on the protected training set
does badly on the *clean* test split, while the same victim trained on the clean training set does well.
Reports final and best clean test accuracy per victim and setting, plus PSNR, SSIM (scikit-image) and max |δ| of
the protected set; prints a table and writes JSON.

Settings: ``clean``; ``labels`` (the generator is given each image's true label, the strongest path);
``owner`` (one code for every image); ``label-free`` (no label: "fast encryption" of new, unlabeled images).

Example (CIFAR-10 at 32×32, 10,000 training images the generator saw, 2,000 test images, two victims):

    python training/evaluate_unlearnability.py --dataset_name ../shared/data/cifar10 \
        --generator modeling_confounder/default_model --train_rows 0:10000 --test_rows 0:2000 \
        --victims test_resnet mobilenetv3_small_100 --settings clean labels label-free \
        --epochs 10 --output_json results/eval_seen.json

Use ``--train_rows 25000:35000`` for images the default generator never saw.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from protection_methods import weights_digest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from victim import bf16_victims_error, hardware_summary, train_victim

from modeling_confounder import DEFAULT_MODEL, ConfounderGenerator
from modeling_confounder.data import ImageClassificationData, load_classification_data

SETTINGS = ("clean", "labels", "owner", "label-free")


def parse_rows(text: str) -> tuple[int, int]:
    start, stop = text.split(":")
    return int(start), int(stop)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_name", required=True, help="Hub id, local dataset folder or save_to_disk folder")
    parser.add_argument("--image_column_name", default=None)
    parser.add_argument("--label_column_name", default=None)
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--test_split", default="test")
    parser.add_argument("--train_rows", type=parse_rows, default=None, metavar="START:STOP")
    parser.add_argument("--test_rows", type=parse_rows, default=None, metavar="START:STOP")
    parser.add_argument("--resolution", type=int, default=None, help="resize images to this square size")
    parser.add_argument("--generator", default=DEFAULT_MODEL, help="generator folder or Hub id")
    parser.add_argument("--epsilon", type=float, default=None, help="in pixel levels out of 255 (default: model's)")
    parser.add_argument("--owner_code", type=int, default=0, help="the code used by the 'owner' setting")
    parser.add_argument("--victims", nargs="+", default=["test_resnet", "mobilenetv3_small_100"],
                        help="timm model names, trained from scratch")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=["clean", "labels", "label-free"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--bf16_victims", nargs="+", default=[], metavar="NAME",
                        help="victims trained under bfloat16 autocast (test_resnet: about 2x faster on CPUs with "
                             "AVX512-BF16; MobileNetV3: slower)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0],
                        help="victim seeds: each victim trains once per seed (a MobileNetV3 cell at 32x32 moved by "
                             "21 points from one seed to another, so compare recipes over several)")
    parser.add_argument("--output_json", type=Path, default=Path("results/unlearnability.json"))
    args = parser.parse_args(argv)
    if error := bf16_victims_error(args.bf16_victims, args.victims):
        parser.error(error)
    args.command = shlex.join(["python", "training/evaluate_unlearnability.py",
                               *(sys.argv[1:] if argv is None else argv)])
    return args


def image_quality(clean: np.ndarray, protected: np.ndarray) -> dict[str, float]:
    """Mean PSNR and SSIM over images, and the largest per-pixel change (in [0, 1] units)."""
    channel_axis = -1 if clean.shape[-1] > 1 else None
    clean_images = clean if channel_axis is not None else clean[..., 0]
    protected_images = protected if channel_axis is not None else protected[..., 0]
    psnr = [peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(clean_images, protected_images)]
    ssim = [structural_similarity(a, b, data_range=255, channel_axis=channel_axis,
                                  win_size=min(7, *a.shape[:2]) // 2 * 2 + 1)
            for a, b in zip(clean_images, protected_images)]
    linf = np.abs(protected.astype(np.int16) - clean.astype(np.int16)).max() / 255
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "linf": float(linf),
            "linf_pixels": round(linf * 255)}


def protected_images(generator: ConfounderGenerator, images: np.ndarray, labels: torch.Tensor, setting: str,
                     owner_code: int, epsilon: float | None) -> np.ndarray:
    given = {"labels": labels.tolist(), "owner": owner_code, "label-free": None}[setting]
    return generator.protect(images, labels=given, epsilon=epsilon, progress=True)


def load_train_and_test(args: argparse.Namespace) -> tuple[ImageClassificationData, ImageClassificationData]:
    """The chosen rows of the train and test splits; test images get the train images' size and channels."""
    train = load_classification_data(args.dataset_name, args.train_split, args.image_column_name,
                                     args.label_column_name, args.train_rows, args.resolution)
    test = load_classification_data(args.dataset_name, args.test_split, args.image_column_name,
                                    args.label_column_name, args.test_rows, args.resolution,
                                    channels=train.channels, num_classes=train.num_classes)
    return train, test


@torch.inference_mode()
def label_agreement(generator: ConfounderGenerator, images: np.ndarray, labels: torch.Tensor) -> float | None:
    """How often the label-free path guesses the true label (None without a label predictor)."""
    if generator.label_predictor is None:
        return None
    guesses = [generator.label_predictor(torch.from_numpy(chunk).permute(0, 3, 1, 2).float().div(255)).argmax(1)
               for chunk in np.array_split(images, max(1, len(images) // 1000))]
    return (torch.cat(guesses) == labels).float().mean().item()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    train, test = load_train_and_test(args)
    generator = None
    if any(setting != "clean" for setting in args.settings):
        generator = ConfounderGenerator.from_pretrained(args.generator)
    epsilon = None if args.epsilon is None else args.epsilon / 255

    report = {"dataset": args.dataset_name, "train_rows": args.train_rows, "test_rows": args.test_rows,
              "n_train": len(train.labels), "n_test": len(test.labels), "generator": str(args.generator),
              "generator_weights": weights_digest(generator) if generator else None,
              "epsilon": (epsilon or (generator.config.epsilon if generator else 0)) * 255,
              "epochs": args.epochs, "hardware": hardware_summary(), "command": args.command, "quality": {},
              "protect_seconds": {}, "runs": []}
    clean = train.images.numpy()
    for setting in args.settings:
        images = train.images
        if setting != "clean":
            started = time.perf_counter()
            protected = protected_images(generator, clean, train.labels, setting, args.owner_code, epsilon)
            report["protect_seconds"][setting] = time.perf_counter() - started
            report["quality"][setting] = image_quality(clean, protected)
            if setting == "label-free":
                report["label_agreement"] = label_agreement(generator.cpu(), clean, train.labels)
            images = torch.from_numpy(protected)
        for victim in args.victims:
            for seed in args.seeds:
                result = train_victim(victim, setting, images, train.labels, test.images, test.labels,
                                      train.num_classes, args.epochs, args.batch_size, args.learning_rate, seed,
                                      bf16=victim in args.bf16_victims)
                report["runs"].append({**result.to_dict(), "seed": seed})
                print(f"{victim:24s} {setting:11s} seed {seed} test {result.test_acc:6.1%} "
                      f"(best {result.best_test_acc:6.1%}) train {result.train_acc:6.1%}  {result.seconds:5.0f}s",
                      flush=True)
                args.output_json.parent.mkdir(parents=True, exist_ok=True)
                args.output_json.write_text(json.dumps(report, indent=2))

    print(format_table(report))
    return report


def format_table(report: dict) -> str:
    """One row per victim run; with several seeds, then the mean and range of each victim and setting."""
    lines = ["| victim | setting | seed | clean test acc (final) | best | train acc | PSNR | SSIM | max abs δ |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_cell: dict[tuple[str, str], list[float]] = {}
    for run in report["runs"]:
        quality = report["quality"].get(run["setting"])
        extra = (f"{quality['psnr']:.1f} dB | {quality['ssim']:.3f} | {quality['linf_pixels']}/255" if quality
                 else "– | – | –")
        lines.append(f"| {run['victim']} | {run['setting']} | {run.get('seed', '–')} | {run['test_acc']:.1%} | "
                     f"{run['best_test_acc']:.1%} | {run['train_acc']:.1%} | {extra} |")
        by_cell.setdefault((run["victim"], run["setting"]), []).append(run["test_acc"])
    if any(len(accuracies) > 1 for accuracies in by_cell.values()):
        lines += ["", "| victim | setting | seeds | mean clean test acc (final) | lowest | highest |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {victim} | {setting} | {len(accuracies)} | {np.mean(accuracies):.1%} | {min(accuracies):.1%} "
                  f"| {max(accuracies):.1%} |" for (victim, setting), accuracies in by_cell.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
