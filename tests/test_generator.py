import numpy as np
import pytest
import torch

from modeling_confounder import DEFAULT_MODEL, ConfounderDiscriminator, ConfounderGenerator, protect
from modeling_confounder.pipeline import noise_in_tiles

from .conftest import make_generator

EPSILON = 8 / 255


@pytest.mark.parametrize("config", [{}, {"in_channels": 1, "num_classes": 2}, {"num_blocks": 3, "width": 4},
                                    {"num_classes": 0}, {"upsampling": "bilinear"}])
@pytest.mark.parametrize("size", [(1, 1), (28, 28), (31, 17), (32, 32), (65, 129)])
def test_noise_is_bounded_and_keeps_the_size(config, size):
    generator = make_generator(**config)
    # Large weights saturate tanh: the bound must hold by construction, not because outputs happen to be small.
    with torch.no_grad():
        generator.head.weight.mul_(100)
    images = torch.rand(3, generator.config.in_channels, *size)
    noise = generator(images)
    assert noise.shape == images.shape
    assert noise.abs().max() <= EPSILON
    assert noise.abs().max() > EPSILON / 2


def test_epsilon_argument_rescales_the_bound(generator):
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(generator(images, epsilon=2 / 255), generator(images) / 4, atol=1e-7)


def test_labels_change_the_noise(generator):
    images = torch.rand(4, 3, 16, 16)
    assert not torch.allclose(generator(images, labels=3), generator(images))
    assert torch.equal(generator(images, labels=3), generator(images, labels=[3, 3, 3, 3]))


@pytest.mark.parametrize("labels, message", [(10, "labels must be in"), (-2, "labels must be in"),
                                              ([1, 2], "got 2 labels for 4 images")])
def test_bad_labels_are_explained(generator, labels, message):
    with pytest.raises(ValueError, match=message):
        generator(torch.rand(4, 3, 8, 8), labels=labels)


def test_minus_one_means_no_label_for_that_image(generator):
    images = torch.rand(2, 3, 16, 16)
    mixed = generator(images, labels=[-1, 5])
    torch.testing.assert_close(mixed[0], generator(images[:1])[0])
    torch.testing.assert_close(mixed[1], generator(images[1:], labels=5)[0])


def test_wrong_channel_count_is_explained(generator):
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, H, W\)"):
        generator(torch.rand(1, 1, 8, 8))


def test_invalid_epsilon_is_rejected():
    with pytest.raises(ValueError, match="epsilon must be in"):
        ConfounderGenerator(epsilon=8)


def test_unknown_upsampling_is_rejected():
    with pytest.raises(ValueError, match="upsampling must be one of pixel_shuffle, bilinear, got 'nearest'"):
        ConfounderGenerator(upsampling="nearest")


@pytest.mark.parametrize("upsampling", ["pixel_shuffle", "bilinear"])
@pytest.mark.parametrize("size", [(300, 301), (257, 512)])
def test_tiles_give_the_same_noise_as_one_pass(size, upsampling):
    generator = make_generator(upsampling=upsampling)
    images = torch.rand(1, 3, *size)
    codes = generator.label_codes(None, 1)
    with torch.inference_mode():
        whole = generator.noise(images, codes)
        tiled = noise_in_tiles(generator, images, codes, None, tile_size=64)
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_discriminator_gives_patch_logits_for_any_size():
    discriminator = ConfounderDiscriminator(width=8)
    assert discriminator(torch.rand(2, 3, 32, 32)).shape == (2, 1, 8, 8)
    assert discriminator(torch.rand(1, 3, 29, 45)).shape[:2] == (1, 1)


def test_default_model_ships_inside_the_package():
    generator = ConfounderGenerator.from_pretrained(DEFAULT_MODEL)
    assert generator.config.epsilon == pytest.approx(EPSILON)
    array = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert np.any(protect(generator, array, key="my key") != array)


def test_label_predictor_guesses_the_code_of_unlabeled_images():
    generator = make_generator(predictor_width=4, predictor_resolution=16)
    images = torch.rand(5, 3, 20, 24)
    guesses = generator.label_predictor(images).argmax(1)
    torch.testing.assert_close(generator(images), generator(images, labels=guesses))
    mixed = generator(images, labels=[-1, 1, -1, 2, -1])
    torch.testing.assert_close(mixed[1], generator(images[1:2], labels=1)[0])
    torch.testing.assert_close(mixed[0], generator(images[:1], labels=guesses[:1])[0])


def test_label_predictor_folds_batch_norm_into_its_convolutions_in_eval_mode():
    predictor = make_generator(predictor_width=4, predictor_resolution=16).label_predictor
    generator = torch.Generator().manual_seed(0)
    for norm in predictor.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            for statistic in (norm.weight, norm.bias, norm.running_mean):
                statistic.data = torch.randn(statistic.shape, generator=generator)
            norm.running_var = torch.rand(norm.running_var.shape, generator=generator) + 0.1
    images = torch.rand(6, 3, 16, 16)
    predictor.eval()
    unfolded = predictor.classifier(predictor.features(images * 2 - 1))
    torch.testing.assert_close(predictor(images), unfolded)
    predictor(images).sum().backward()
    assert all(parameter.grad is not None for parameter in predictor.parameters())


def test_label_predictor_sees_the_whole_photo_when_tiled():
    generator = make_generator(predictor_width=4, predictor_resolution=16)
    image = np.random.default_rng(0).integers(0, 256, (1, 200, 300, 3), dtype=np.uint8)
    np.testing.assert_array_equal(protect(generator, image, tile_size=64), protect(generator, image, tile_size=1024))
