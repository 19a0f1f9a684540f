"""Owner keys: hashing, key files, and protection with a keyed generator."""

import stat

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_confounder import DEFAULT_MODEL, ConfounderGenerator, is_keyed, load_or_create_key, new_key, protect
from modeling_confounder.keys import class_key, key_code, key_codes


@pytest.fixture(scope="module")
def keyed() -> ConfounderGenerator:
    torch.manual_seed(0)
    return ConfounderGenerator(num_classes=0, key_dim=256, width=8, num_blocks=1).eval()


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)


def test_a_key_hashes_to_the_same_normal_code_every_time() -> None:
    code = key_code("alice", 256)
    assert torch.equal(code, key_code("alice", 256)) and code.shape == (256,)
    assert abs(code.mean()) < 0.2 and 0.8 < code.std() < 1.2
    assert not torch.equal(code, key_code("alice ", 256))
    assert torch.equal(key_code(42, 8), key_code("42", 8)) and torch.equal(key_code(b"x", 8), key_code("x", 8))
    assert torch.equal(key_codes(["a", "b", "a"], 8)[2], key_code("a", 8))


@pytest.mark.parametrize(("key", "error"), [("", ValueError), (b"", ValueError), (1.5, TypeError), (True, TypeError)])
def test_a_key_is_non_empty_text_bytes_or_an_integer(key: object, error: type) -> None:
    with pytest.raises(error):
        key_code(key, 8)


def test_each_class_of_a_secret_gets_its_own_key() -> None:
    assert class_key("s", 0) != class_key("s", 1) != class_key("t", 1)
    assert class_key("s", 7) == class_key("s", 7)
    assert len({class_key("s", label) for label in range(1000)}) == 1000


def test_a_new_key_file_is_private_and_reused(tmp_path) -> None:
    path = tmp_path / "config" / "confounder" / "key"
    key, created = load_or_create_key(path)
    assert created and len(key) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == (key, False)
    assert new_key() != new_key()
    path.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        load_or_create_key(path)


def test_keyed_protection_is_bounded_deterministic_and_differs_by_key(keyed, images) -> None:
    alice = protect(keyed, images, key="alice")
    assert np.abs(alice.astype(int) - images).max() <= 8
    assert np.array_equal(alice, protect(keyed, images, key="alice"))
    assert (alice != protect(keyed, images, key="bob")).mean() > 0.3
    by_class = protect(keyed, images, key="alice", labels=[0, 1, 0])
    assert not np.array_equal(by_class[1], alice[1])
    assert np.array_equal(protect(keyed, images[:1], key="alice", labels=5)[0],
                          protect(keyed, images[:1], key=class_key("alice", 5))[0])


def test_keyed_tiles_match_a_single_pass(keyed) -> None:
    photo = np.random.default_rng(1).integers(0, 256, (1, 150, 230, 3), dtype=np.uint8)
    assert np.array_equal(protect(keyed, photo, key="k"), protect(keyed, photo, key="k", tile_size=64))


def test_keys_and_labels_go_to_the_generator_that_takes_them(keyed, generator, images) -> None:
    with pytest.raises(ValueError, match="this generator is keyed") as missing:
        protect(keyed, images)
    with pytest.raises(ValueError, match="not keys"):
        protect(generator, images, key="secret-value")
    with pytest.raises(ValueError, match="class indices"):
        protect(keyed, images, key="secret-value", labels=[-1, 0, 1])
    assert "secret-value" not in str(missing.value)
    assert is_keyed(keyed) and not is_keyed(generator)


def test_the_shipped_keyed_generator_loads_and_protects_a_photo() -> None:
    generator = ConfounderGenerator.from_pretrained(DEFAULT_MODEL)
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    protected = protect(generator, photo, key="my key")
    assert protected.size == photo.size and protected.mode == "RGB"
    assert 0 < np.abs(np.asarray(protected, dtype=int) - np.asarray(photo)).max() <= 8
