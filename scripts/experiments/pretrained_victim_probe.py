"""Probe: can an ImageNet-pretrained EfficientNet-Lite0, fine-tuned on the quick protocol's clean rows, reach the
≥ 75 % clean accuracy that #16 asks of a larger victim, within a few CPU minutes? Measured on the validation rows
(34,000–34,999), never on the test rows.

    python -m scripts.experiments.pretrained_victim_probe --epochs 2 --size 64 --output results/experiments/pretrained_probe.json
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from training.data import load_classification_data
from training.fitting import Optimization, epoch_batches, fit_batches, make_optimizer
from training.pretrained import MEAN, STD, pretrained_efficientnet_lite0
from training.victim import hardware_summary

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--size", type=int, default=64)
parser.add_argument("--learning_rate", type=float, default=0.02)
parser.add_argument("--output", type=Path)
args = parser.parse_args()

data = load_classification_data("../shared/data/cifar10", "train", "img", "label", (25_000, 35_000))
train_images, train_labels = data.images[:9_000], data.labels[:9_000]
validation_images, validation_labels = data.images[9_000:], data.labels[9_000:]
mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]


def prepare(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC → normalised NCHW at ``--size`` px (the crop and flip of fit_batches come after)."""
    floats = images.permute(0, 3, 1, 2).float() / 255
    return (F.interpolate(floats, size=args.size, mode="bilinear", antialias=True) - mean) / std


torch.manual_seed(0)
model = pretrained_efficientnet_lite0(num_classes=10)
steps = args.epochs * -(-len(train_labels) // 128)
optimizer, schedule = make_optimizer(model, Optimization("sgd", args.learning_rate, warmup=0.2), steps)
generator = torch.Generator().manual_seed(0)
started, history = time.perf_counter(), []
for _ in range(args.epochs):
    fit_batches(model, optimizer, schedule, epoch_batches(len(train_labels), 128, generator),
                lambda indices: prepare(train_images[indices]), train_labels, generator)
    model.eval()
    with torch.inference_mode():
        predicted = torch.cat([model(prepare(validation_images[i:i + 250])).argmax(1) for i in range(0, 1000, 250)])
    history.append((predicted == validation_labels).float().mean().item())
    print(f"epoch {len(history)}: validation accuracy {history[-1]:.1%}, {time.perf_counter() - started:.0f} s",
          flush=True)
report = {"victim": "tf_efficientnet_lite0, ImageNet-pretrained, fine-tuned", "size": args.size,
          "epochs": args.epochs, "learning_rate": args.learning_rate, "validation_history": history,
          "seconds": time.perf_counter() - started, "hardware": hardware_summary()}
if args.output:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
