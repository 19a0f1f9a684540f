"""How much of a generator's noise is one fixed pattern per key (or class)?

Protects CIFAR-10 rows as the benchmark's ``confounder`` method does (a keyed generator: a key per class from the
secret of seeds 0, 1 and 2; a label generator: the labels) and reports, for each class, the noise's root mean
square (in pixel levels; 8 is the bound) and the share of its energy that is the class's mean pattern (1: every
image of the class gets the same noise; 0: no shared part):

    python -m scripts.experiments.noise_structure --rows 25000:34000 \
        --output_json results/experiments/noise_structure.json
    python -m scripts.experiments.noise_structure --model runs/benchmark-cache-fair/generator-DIGEST \
        --output_json results/experiments/noise_structure_trained.json   # the quick protocol's trained generator
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets
import numpy as np
import torch

from modeling_confounder import DEFAULT_MODEL, is_keyed
from training.methods import ConfounderGAN


def structure(noise: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """Per class: the noise's RMS and the share of its energy in the class's mean pattern."""
    rms, shared = [], []
    for label in range(labels.max() + 1):
        of_class = noise[labels == label]
        energy = (of_class**2).mean()
        rms.append(round(float(np.sqrt(energy)), 2))
        shared.append(round(float((of_class.mean(0) ** 2).mean() / energy), 3))
    return {"rms_levels": rms, "shared_share": shared}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_name", default="../shared/data/cifar10")
    parser.add_argument("--rows", default="25000:34000", help="START:STOP of the training split")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--output_json", type=Path, default=Path("results/experiments/noise_structure.json"))
    args = parser.parse_args()
    start, stop = map(int, args.rows.split(":"))
    rows = datasets.load_dataset(args.dataset_name, split="train").select(range(start, stop))
    images = torch.from_numpy(np.stack([np.asarray(image.convert("RGB")) for image in rows["img"]]))
    labels = torch.tensor(rows["label"])
    method = ConfounderGAN(model=args.model)
    keyed = is_keyed(method.generator)
    report = {"dataset": args.dataset_name, "rows": args.rows, "model": args.model, "noise": {}}
    for method.seed in (0, 1, 2) if keyed else (0,):
        noise = method.perturb(images, labels).double() - images
        report["noise"][f"seed {method.seed}" if keyed else "labels"] = structure(noise.numpy(), labels.numpy())
    args.output_json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["noise"], indent=1))


if __name__ == "__main__":
    main()
