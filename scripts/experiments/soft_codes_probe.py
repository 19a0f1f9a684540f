"""Probe (not shipped): label-free noise from the probability-weighted mix of class codes.

The shipped label-free path adds the noise of the label predictor's most likely class. Here the generator gets
instead the label embeddings averaged with the predictor's softmax probabilities (at ``temperature``), so an
unsure guess carries some of the true class's code. Trains test_byobnet (20 epochs) on the protected rows and
tests it on the first 2,000 clean test images, like ``python -m training.evaluate``. From the repository root:

    python -m scripts.experiments.soft_codes_probe 25000:35000 1.0 0,1,2 \
        results/experiments/soft_codes_T1_test_byobnet_unseen.json
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from modeling_confounder import CIFAR10_MODEL, ConfounderGenerator
from training.data import load_classification_data
from training.victim import train_victim


def soft_code_protect(generator: ConfounderGenerator, images: torch.Tensor,
                      temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Protected uint8 NHWC images and the predictor's guesses, for float NCHW ``images`` in [0, 1]."""
    logits = generator.label_predictor(images)
    classes = generator.config.num_classes
    embedding = F.softmax(logits / temperature, 1) @ generator.label_embedding.weight[:classes]
    features = generator.blocks(generator.stem(images * 2 - 1) + embedding[:, :, None, None])
    noise = generator.config.epsilon * torch.tanh(generator.upsample(generator.head(F.relu(features))))
    protected = ((images + noise).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return protected, logits.argmax(1)


def main(argv: list[str]) -> None:
    rows, temperature, seeds, output = argv[0], float(argv[1]), argv[2], Path(argv[3])
    start, stop = map(int, rows.split(":"))
    train = load_classification_data("../shared/data/cifar10", "train", rows=(start, stop))
    test = load_classification_data("../shared/data/cifar10", "test", rows=(0, 2000))
    generator = ConfounderGenerator.from_pretrained(CIFAR10_MODEL).eval()
    protected, guesses = [], []
    with torch.inference_mode():
        for chunk in train.images.split(500):
            images, guess = soft_code_protect(generator, chunk.permute(0, 3, 1, 2).float() / 255, temperature)
            protected.append(images)
            guesses.append(guess)
    protected = torch.cat(protected)
    report = {"rows": [start, stop], "temperature": temperature, "generator": CIFAR10_MODEL,
              "label_agreement": (torch.cat(guesses) == train.labels).float().mean().item(),
              "linf_pixels": (protected.int() - train.images.int()).abs().max().item(), "runs": []}
    for seed in map(int, seeds.split(",")):
        result = train_victim("test_byobnet", "label-free-soft", protected, train.labels, test.images, test.labels,
                              train.num_classes, 20, seed=seed, progress=False)
        report["runs"].append({"seed": seed, "test_acc": result.test_acc, "best_test_acc": result.best_test_acc,
                               "train_acc": result.train_acc})
        print(seed, f"{result.test_acc:.1%}", flush=True)
        output.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
