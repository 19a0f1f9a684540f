"""Probe: which AdamW learning rate and how many epochs for the clothing protocol's ``transformers`` victim
(``training.victim.train_with_trainer``)? Trains it with the ``Trainer`` on the clean clothing photos at 80 px and reads
the accuracy on the dataset's validation split after each epoch; the test photos are not used.

    python -m scripts.experiments.transformers_victim_probe --learning_rates 5e-4 2e-3 4e-3 --epochs 30 \
        --output results/experiments/transformers_victim_probe.json
"""

import argparse
import json
from pathlib import Path

from training.data import load_classification_data
from training.victim import hardware_summary, train_with_trainer

parser = argparse.ArgumentParser()
parser.add_argument("--dataset", default="../shared/data/clothing")
parser.add_argument("--victim", default="hf_convnext")
parser.add_argument("--resolution", type=int, default=80)
parser.add_argument("--learning_rates", type=float, nargs="+", default=[5e-4, 2e-3, 4e-3])
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--crop_scale", type=float, default=0.35)
parser.add_argument("--rows", type=int, default=None, help="train on the first N photos only (a smoke test)")
parser.add_argument("--output", type=Path)
args = parser.parse_args()

train = load_classification_data(args.dataset, "train", None, None, None if args.rows is None else (0, args.rows),
                                 args.resolution)
validation = load_classification_data(args.dataset, "validation", None, None, None, args.resolution,
                                      train.channels, train.num_classes)
report = {"victim": args.victim, "resolution": args.resolution, "epochs": args.epochs, "crop_scale": args.crop_scale,
          "runs": [], "hardware": hardware_summary()}
for learning_rate in args.learning_rates:
    result, _ = train_with_trainer(args.victim, train.images, train.labels, validation.images, validation.labels,
                                   train.num_classes, args.epochs, (validation.images, validation.labels),
                                   crop_scale=args.crop_scale, learning_rate=learning_rate, progress=False)
    best = max(range(args.epochs), key=result.history.__getitem__)
    print(f"learning rate {learning_rate:g}: validation accuracy {result.history[-1]:.1%} after the last epoch, "
          f"{result.history[best]:.1%} at its best (epoch {best + 1}), {result.seconds:.0f} s", flush=True)
    report["runs"].append({"learning_rate": learning_rate, "validation_history": result.history,
                           "seconds": result.seconds})
if args.output:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
