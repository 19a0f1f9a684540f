"""Do two checkouts protect the same images identically? Saves what ``DEFAULT_MODEL`` makes of CIFAR-10 rows.

Run it once per checkout (``PYTHONPATH`` picks the checkout), then compare the two files:

    git worktree add /tmp/before b1c9740
    PYTHONPATH=/tmp/before python results/experiments/compare_protected.py 25000:35000 /tmp/before.npy
    python results/experiments/compare_protected.py 25000:35000 /tmp/after.npy
    python results/experiments/compare_protected.py --compare /tmp/before.npy /tmp/after.npy
"""

import sys

import datasets
import numpy as np

from modeling_confounder import DEFAULT_MODEL, ConfounderGenerator

if sys.argv[1] == "--compare":
    before, after = np.load(sys.argv[2]), np.load(sys.argv[3])
    differing = (before != after).any(axis=(1, 2, 3)).sum()
    print(f"{differing} of {len(before)} protected images differ")
else:
    start, stop = map(int, sys.argv[1].split(":"))
    rows = datasets.load_dataset("../shared/data/cifar10", split="train").select(range(start, stop))
    images = np.stack([np.asarray(image.convert("RGB")) for image in rows["img"]])
    np.save(sys.argv[2], ConfounderGenerator.from_pretrained(DEFAULT_MODEL).protect(images))
