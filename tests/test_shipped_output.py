"""The shipped weights protect a fixed input into exactly the recorded bytes.

Digests recorded with the weights in ``modeling_confounder/cifar10_model`` (the CIFAR-10 label generator with its
120-epoch label predictor) and ``modeling_confounder/keyed_model`` (the keyed ``DEFAULT_MODEL``). A refactor or a
speed-up must keep them; new weights must record new ones, and say so in the commit.
"""

import hashlib

import numpy as np
import pytest
from PIL import Image

from modeling_confounder import CIFAR10_MODEL, DEFAULT_MODEL, ConfounderGenerator, protect

EXPECTED = {
    "labelled": "bdd57f36f7d346f6036491b653a55f323beb7ca720c55bdd09554b7d2deccd24",
    "label_free": "31986eb2938e04ae575c3097f06822acc225f1f39c9e43617843519f403e17fb",
    "tiled": "b6dfaea96a226961e0423469f7296cbe8f1aa182cd818a6321d23fa018d00e6b",
    "gray": "91f0f81b779e84b9731f95fb565e674551f974f35986025ce80ac73669933983",
    "keyed_owner": "18288544d494e7ba586a1d72fb3f8bbf00a4db5a1d3b1b4d9603760d82a78e09",
    "keyed_classes": "67556cb9fb3a00914c573857287fe12efa4d759def123d029e096bbeb400b2b9",
    "keyed_tiled": "02f3ea5fa5f7e6952ba135b2a0e2e53db199bd39cee4d21e573f65e2d942582c",
}


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    labels = ConfounderGenerator.from_pretrained(CIFAR10_MODEL)
    keyed = ConfounderGenerator.from_pretrained(DEFAULT_MODEL)
    rng = np.random.default_rng(2212)
    small = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    large = rng.integers(0, 256, (1, 200, 300, 3), dtype=np.uint8)
    gray = Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8), "L")
    return {
        "labelled": protect(labels, small, labels=[0, 1, 2, 3, 4, 9]),
        "label_free": protect(labels, small),
        "tiled": protect(labels, large, labels=3, tile_size=64),
        "gray": np.asarray(protect(labels, gray, labels=5)),
        "keyed_owner": protect(keyed, small, key="owner"),
        "keyed_classes": protect(keyed, small, key="secret", labels=[0, 1, 2, 3, 4, 99]),
        "keyed_tiled": protect(keyed, large, key="owner", tile_size=64),
    }


@pytest.mark.parametrize("case", EXPECTED)
def test_shipped_weights_give_the_recorded_bytes(outputs: dict[str, np.ndarray], case: str) -> None:
    digest = hashlib.sha256(np.ascontiguousarray(outputs[case]).tobytes()).hexdigest()
    assert digest == EXPECTED[case]
