"""Protected training sets on disk, so that a rerun only retrains victims."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from training.data import ImageClassificationData
from training.methods import Method


class PerturbationCache:
    """Protected training sets on disk as int8 noise, keyed by the method's settings and the training data.

    Code is not part of the key: after changing how a method works, delete its files from the cache. ``salt``
    tells apart sets made from the same data in different ways (sets that went through published photos).
    """

    def __init__(self, folder: Path, data: ImageClassificationData, salt: str = "") -> None:
        self.folder = Path(folder)
        digest = hashlib.sha256(data.images.numpy().tobytes())
        digest.update(data.labels.numpy().tobytes())
        digest.update(salt.encode())
        self.fingerprint = digest.hexdigest()

    def path(self, label: str, method: Method) -> Path:
        key = hashlib.sha256((method.digest() + self.fingerprint).encode()).hexdigest()[:16]
        return self.folder / f"{label}-{key}.npz"

    def load(self, label: str, method: Method, clean: torch.Tensor) -> tuple[torch.Tensor, dict] | None:
        path = self.path(label, method)
        return self.read(path, clean) if path.exists() else None

    @staticmethod
    def read(path: Path, clean: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The protected training set stored at ``path`` for the ``clean`` images, and its info."""
        with np.load(path) as stored:
            noise = torch.from_numpy(stored["noise"])
            info = json.loads(str(stored["info"]))
        return (clean.to(torch.int16) + noise).to(torch.uint8), info

    def save(self, label: str, method: Method, clean: torch.Tensor, protected: torch.Tensor,
             info: dict) -> None:
        path = self.path(label, method)
        path.parent.mkdir(parents=True, exist_ok=True)
        unfinished = path.with_name(path.stem + ".partial.npz")  # renamed once complete: never half a file
        noise = (protected.to(torch.int16) - clean.to(torch.int16)).to(torch.int8).numpy()
        np.savez_compressed(unfinished, noise=noise, info=np.array(json.dumps(info, default=str)))
        unfinished.replace(path)
