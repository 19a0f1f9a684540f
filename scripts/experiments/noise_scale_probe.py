"""Probe: does protecting full-size photos at their own pixel scale survive a scraper who shrinks them, and does
noise made at a coarser scale do better? The keyed ``DEFAULT_MODEL`` protects every training photo of
``shared/data/clothing`` (each class its own key from one secret), once with the noise at the photo's own pixels
(``protect``) and once made on a copy shrunk to a shorter side of ``--noise_size`` and resized back onto the photo
(``coarse_protect``); the scraper then resizes the photos' centre squares to ``--resolution`` and trains victims
from there as the clothing protocol does (random resized crops of 35–100 % of the area), tested on clean photos
(balanced accuracy; the validation split watches the epochs). One seed.

    python -m scripts.experiments.noise_scale_probe --output results/experiments/noise_scale_probe.json
"""

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from modeling_confounder import DEFAULT_MODEL, ConfounderGenerator, protect
from modeling_confounder.hub_datasets import load_split
from modeling_confounder.images import add_noise, array_to_pil, pil_to_array, to_float
from modeling_confounder.pipeline import conditioning
from training.data import load_classification_data, to_array
from training.defenses import resized_crop
from training.victim import hardware_summary, train_victim

parser = argparse.ArgumentParser()
parser.add_argument("--dataset", default="../shared/data/clothing")
parser.add_argument("--resolution", type=int, default=80, help="the scraper's training size")
parser.add_argument("--noise_size", type=int, default=80, help="the shorter side of the coarse noise")
parser.add_argument("--victims", nargs="+", default=["test_efficientnet:30", "pretrained_lite0:6"])
parser.add_argument("--photos", type=int, default=None, help="protect only the first N training photos (a smoke test)")
parser.add_argument("--output", type=Path)
args = parser.parse_args()

generator = ConfounderGenerator.from_pretrained(DEFAULT_MODEL)
train_split = load_split(args.dataset, "train")
if args.photos:
    train_split = train_split.shuffle(seed=0).select(range(args.photos))
labels = torch.tensor(train_split["label"])
validation = load_classification_data(args.dataset, "validation", resolution=args.resolution)
test = load_classification_data(args.dataset, "test", resolution=args.resolution)


KEY = "noise scale probe secret"


@torch.inference_mode()
def coarse_protect(photo: Image.Image, label: int, size: int) -> Image.Image:
    """``photo`` with the noise made on a copy shrunk to a shorter side of ``size`` and resized back (bilinear)."""
    batch = torch.from_numpy(pil_to_array(photo))[None]
    images = to_float(batch)
    height, width = images.shape[-2:]
    scale = size / min(height, width)
    small = F.interpolate(images, size=(round(height * scale), round(width * scale)), mode="bilinear",
                          antialias=True)
    noise = generator.noise(small, conditioning(generator, [label], KEY, 1), generator.config.epsilon)
    noise = F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)
    return array_to_pil(add_noise(batch, noise, generator.config.epsilon)[0].numpy())


def scraped(noise_size: int | None) -> torch.Tensor:
    """Every training photo protected at full size, then its centre square resized as the scraper does."""
    images = []
    for row in tqdm(train_split, desc=f"noise_size={noise_size}", unit="photo"):
        photo = row["image"].convert("RGB")
        published = (protect(generator, photo, labels=[row["label"]], key=KEY) if noise_size is None
                     else coarse_protect(photo, row["label"], noise_size))
        images.append(to_array(published, args.resolution, 3))
    return torch.from_numpy(np.stack(images))


report = {"dataset": args.dataset, "resolution": args.resolution, "noise_size": args.noise_size,
          "hardware": hardware_summary(), "runs": []}
for setting, noise_size in (("own pixels", None), (f"noise_size={args.noise_size}", args.noise_size)):
    started = time.perf_counter()
    images = scraped(noise_size)
    protect_seconds = time.perf_counter() - started
    for spec in args.victims:
        name, epochs = spec.split(":")
        result = train_victim(name, setting, images, labels, test.images, test.labels, 10, int(epochs),
                              learning_rate=0.02 if name.startswith("pretrained") else 0.05,
                              validation=(validation.images, validation.labels),
                              batch_transform=partial(resized_crop, scale=0.35))
        report["runs"].append({**result.to_dict(), "protect_seconds": protect_seconds})
        print(f"{setting:18s} {name:20s} balanced {result.balanced_test_acc:.1%}", flush=True)
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=2))
