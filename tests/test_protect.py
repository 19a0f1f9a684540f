import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from modeling_confounder import image_quality, protect, quality

EPSILON = 8 / 255
MAX_STEP = 8


def assert_protected(original: np.ndarray, protected: np.ndarray, max_step: int = MAX_STEP) -> None:
    difference = protected.astype(int) - original.astype(int)
    assert protected.dtype == np.uint8 and protected.shape == original.shape
    assert np.abs(difference).max() <= max_step
    assert np.any(difference != 0)


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (2, 28, 28, 1), (3, 31, 17, 3), (2, 33, 47, 4), (1, 9, 5, 2)])
@pytest.mark.parametrize("fill", ["random", 0, 255])
def test_uint8_bound_holds_for_random_and_extreme_inputs(generator, rng, shape, fill):
    images = rng.integers(0, 256, shape, dtype=np.uint8) if fill == "random" else np.full(shape, fill, np.uint8)
    protected = protect(generator, images)
    difference = protected.astype(int) - images.astype(int)
    assert protected.shape == images.shape and protected.dtype == np.uint8
    assert np.abs(difference).max() <= MAX_STEP
    if fill == "random" and shape[1] * shape[2] > 1:
        assert np.any(difference != 0)


def test_alpha_is_untouched(generator, rng):
    images = rng.integers(0, 256, (2, 20, 20, 4), dtype=np.uint8)
    protected = protect(generator, images)
    np.testing.assert_array_equal(protected[..., 3], images[..., 3])
    assert_protected(images[..., :3], protected[..., :3])


def test_epsilon_argument_sets_the_uint8_bound(generator, rng):
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert_protected(images, protect(generator, images, epsilon=3 / 255), max_step=3)


def test_same_input_gives_identical_output(generator, rng):
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    first, second = protect(generator, images), protect(generator, images.copy())
    assert first.tobytes() == second.tobytes()


def test_input_array_is_not_modified(generator, rng):
    images = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    copy = images.copy()
    protect(generator, images)
    np.testing.assert_array_equal(images, copy)


@pytest.mark.parametrize("mode, expected", [("RGB", "RGB"), ("L", "L"), ("RGBA", "RGBA"), ("LA", "LA"),
                                            ("P", "RGB"), ("1", "L"), ("CMYK", "RGB")])
def test_pil_image_in_pil_image_out(generator, rng, mode, expected):
    image = Image.fromarray(rng.integers(0, 256, (21, 34, 3), dtype=np.uint8)).convert(mode)
    protected = protect(generator, image)
    assert isinstance(protected, Image.Image)
    assert protected.mode == expected and protected.size == image.size
    original = np.asarray(image.convert(expected))
    assert_protected(original.reshape(protected.size[1], protected.size[0], -1),
                     np.asarray(protected).reshape(protected.size[1], protected.size[0], -1))


def test_list_of_mixed_images_keeps_order_sizes_and_modes(generator, rng):
    images = [Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8))
              for size in [(32, 32, 3), (40, 30), (32, 32, 3), (17, 23, 4), (32, 32, 3)]]
    protected = protect(generator, images, batch_size=2)
    assert isinstance(protected, list) and len(protected) == len(images)
    for original, output in zip(images, protected):
        assert (output.mode, output.size) == (original.mode, original.size)
    # Batching is an implementation detail: each image gets the noise it gets alone.
    np.testing.assert_array_equal(np.asarray(protected[2]), np.asarray(protect(generator, images[2])))


def test_grayscale_generator_protects_rgb_with_one_noise_for_all_channels(rng):
    from .conftest import make_generator

    generator = make_generator(in_channels=1, num_classes=2)
    images = rng.integers(8, 248, (2, 28, 28, 3), dtype=np.uint8)
    difference = protect(generator, images).astype(int) - images
    assert np.any(difference != 0)
    assert np.all(difference[..., 0] == difference[..., 1]) and np.all(difference[..., 1] == difference[..., 2])


def test_large_photo_is_tiled_with_the_same_result(generator, rng):
    image = rng.integers(0, 256, (1, 300, 420, 3), dtype=np.uint8)
    np.testing.assert_array_equal(protect(generator, image, tile_size=64), protect(generator, image, tile_size=1024))


def test_one_label_for_all_images(generator, rng):
    images = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(protect(generator, images, labels=4), protect(generator, images, labels=[4, 4, 4]))
    assert np.any(protect(generator, images, labels=4) != protect(generator, images))


@pytest.mark.parametrize("images, error, message", [
    (np.zeros((4, 4, 3), np.uint8), ValueError, r"images\[None\]"),
    (np.zeros((1, 4, 4, 3), np.float32), ValueError, "uint8"),
    ("photo.png", TypeError, "takes a uint8 NHWC numpy array"),
])
def test_wrong_input_kinds_are_explained(generator, images, error, message):
    with pytest.raises(error, match=message):
        protect(generator, images)


def test_invalid_epsilon_is_explained(generator):
    with pytest.raises(ValueError, match="divide pixel values by 255"):
        protect(generator, np.zeros((1, 4, 4, 3), np.uint8), epsilon=8)


@pytest.mark.parametrize("shape", [(40, 23, 3), (19, 50, 1), (30, 30, 4), (12, 9, 2)])
def test_image_quality_in_strips_equals_scikit_image_on_the_whole_image(rng, monkeypatch, shape):
    monkeypatch.setattr(quality, "STRIP_PIXELS", 64)  # strips of 7 rows (the minimum), many of them
    original = rng.integers(0, 256, shape, dtype=np.uint8)
    protected = np.clip(original.astype(int) + rng.integers(-8, 9, shape), 0, 255).astype(np.uint8)
    if shape[-1] in (2, 4):
        protected[..., -1] = 0  # the alpha channel is never changed by protection, and not part of the quality
    color = slice(0, 1 if shape[-1] in (1, 2) else 3)
    psnr, ssim = image_quality(original, protected)
    assert psnr == pytest.approx(peak_signal_noise_ratio(original[..., color], protected[..., color],
                                                         data_range=255), rel=1e-12)
    assert ssim == pytest.approx(structural_similarity(original[..., color], protected[..., color],
                                                       data_range=255, channel_axis=-1), rel=1e-9)
    assert image_quality(original, original)[0] == float("inf")
