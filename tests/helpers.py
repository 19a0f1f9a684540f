"""Builders of tiny generated test data shared by the test modules."""

from pathlib import Path

import datasets
import numpy as np
from PIL import Image


def tiny_dataset(folder: Path, rows: int = 40, size: int = 16, mode: str = "RGB", classes: int = 4) -> str:
    """Save a random-image dataset ("picture", "target" columns; train and test splits) to `folder`."""
    rng = np.random.default_rng(0)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    split = lambda count: datasets.Dataset.from_dict(
        {"picture": [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(count)],
         "target": [i % classes for i in range(count)]},
        features=datasets.Features({"picture": datasets.Image(),
                                    "target": datasets.ClassLabel(num_classes=classes)}))
    datasets.DatasetDict({"train": split(rows), "test": split(rows // 2)}).save_to_disk(str(folder))
    return str(folder)
