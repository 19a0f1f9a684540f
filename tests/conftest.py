"""Shared fixtures. Tests never touch the network or ../shared: models are tiny and data is generated."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from modeling_confounder import ConfounderGenerator


def make_generator(seed: int = 0, **config) -> ConfounderGenerator:
    torch.manual_seed(seed)
    return ConfounderGenerator(**{"width": 8, "num_blocks": 1, **config}).eval()


@pytest.fixture
def generator() -> ConfounderGenerator:
    return make_generator()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, above all on busy cores (``pytestmark`` of modules that train)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
