"""Do two checkouts protect the same images identically? Saves what ``CIFAR10_MODEL`` makes of CIFAR-10 rows.

Run it once per checkout (``PYTHONPATH`` picks the checkout's ``modeling_confounder``), then compare the files:

    git worktree add /tmp/before COMMIT
    PYTHONPATH=/tmp/before python -m scripts.experiments.compare_protected 25000:35000 /tmp/before.npy
    python -m scripts.experiments.compare_protected 25000:35000 /tmp/after.npy
    python -m scripts.experiments.compare_protected --compare /tmp/before.npy /tmp/after.npy
"""

import sys

import datasets
import numpy as np

from modeling_confounder import CIFAR10_MODEL, ConfounderGenerator

try:
    from modeling_confounder import protect
except ImportError:  # checkouts whose API is the method ``generator.protect(images)``
    def protect(generator: ConfounderGenerator, images: np.ndarray) -> np.ndarray:
        return generator.protect(images)


def main(argv: list[str]) -> None:
    if argv[0] == "--compare":
        before, after = np.load(argv[1]), np.load(argv[2])
        differing = (before != after).any(axis=(1, 2, 3)).sum()
        print(f"{differing} of {len(before)} protected images differ")
        return
    start, stop = map(int, argv[0].split(":"))
    rows = datasets.load_dataset("../shared/data/cifar10", split="train").select(range(start, stop))
    images = np.stack([np.asarray(image.convert("RGB")) for image in rows["img"]])
    np.save(argv[1], protect(ConfounderGenerator.from_pretrained(CIFAR10_MODEL), images))


if __name__ == "__main__":
    main(sys.argv[1:])
