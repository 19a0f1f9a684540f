"""The ConfounderGAN generator: an image-to-noise network, δ = G(x, y), with ‖δ‖∞ ≤ ε by construction.

Paper: Tian et al., "ConfounderGAN: Protecting Image Data Privacy with Causal Confounder", NeurIPS 2022.
The noise δ is a *confounder*: it is made to carry the label, so a classifier trained on x + δ learns the easy
δ → y shortcut instead of x → y and fails on clean images.

Tensor conventions: images are NCHW float in [0, 1]; ε is in the same units (pixel / 255, default 8/255).

Why diffusers' ``ModelMixin`` + ``ConfigMixin``: the config *is* the ``__init__`` signature
(``@register_to_config``), weights are saved as safetensors next to a plain ``config.json``, and
``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` work for local folders and Hub ids alike, without the
tokenizer and processor machinery that ``transformers.PreTrainedModel`` brings along.

Architecture (lean on purpose: protection is the product's hot path, measured by ``python -m training.speed``):
a stride-2 stem halves the resolution, a few residual blocks run at half resolution with a label embedding added
to their features, and a pixel-shuffle head returns to full resolution (or, with ``upsampling="bilinear"``, a
half-resolution noise map is interpolated up: smoother noise whose pattern does not depend on the pixel phase that a
victim's random crop and strided layers see). Everything is convolutional and there is no normalisation layer, so
any height and width works and ``modeling_confounder.pipeline`` can process large photos in overlapping tiles with
exactly the output of a single pass. Unlabeled images get the "no label" code, or, when the generator has a
``LabelPredictor``, the code of the class it guesses from a thumbnail of the whole image.

A *keyed* generator (``key_dim > 0``) is conditioned on an owner key instead of a class: the key's code (``key_dim``
numbers hashed from the key, ``modeling_confounder.keys``) is added to the body's features through a linear map,
and its first numbers are also laid over the image as two periodic patterns (8 and 32 pixels), extra input channels
of the stem. Every photo of one key then carries the same spatial shortcut, whatever it shows, and any number of
owners get shortcuts of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import nn

from .hub import HubModel
from .label_predictor import LabelPredictor

UPSAMPLING = ("pixel_shuffle", "bilinear")
FINE_TILE, COARSE_TILE, COARSE_BLOCK = 8, 4, 8  # key patterns: an 8-px tile, and a 4×4 tile of 8-px blocks (32 px)
PATTERN_CHANNELS = 6  # three channels per pattern
PATTERN_NUMBERS = 3 * FINE_TILE**2 + 3 * COARSE_TILE**2  # the code numbers the two patterns use


def check_epsilon(epsilon: float) -> float:
    """``epsilon`` when it is a valid L∞ bound in [0, 1] image units; raises ``ValueError`` otherwise."""
    if not 0 < epsilon <= 1:
        raise ValueError(f"epsilon must be in (0, 1] image units (e.g. 8/255), got {epsilon}; "
                         "divide pixel values by 255")
    return epsilon


def tile(pattern: torch.Tensor, height: int, width: int, origin: tuple[int, int]) -> torch.Tensor:
    """``pattern`` (N, C, s, s) repeated over a height × width image whose top-left pixel is at ``origin``."""
    side = pattern.shape[-1]
    rows = (torch.arange(height, device=pattern.device) + origin[0]) % side
    columns = (torch.arange(width, device=pattern.device) + origin[1]) % side
    return pattern[:, :, rows][:, :, :, columns]


def key_patterns(codes: torch.Tensor, height: int, width: int, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """The two periodic patterns of each key code, (N, 6, height, width), in absolute image coordinates."""
    count, fine_numbers = len(codes), 3 * FINE_TILE**2
    fine = codes[:, :fine_numbers].reshape(count, 3, FINE_TILE, FINE_TILE)
    coarse = codes[:, fine_numbers:PATTERN_NUMBERS].reshape(count, 3, COARSE_TILE, COARSE_TILE)
    coarse = coarse.repeat_interleave(COARSE_BLOCK, 2).repeat_interleave(COARSE_BLOCK, 3)
    return torch.cat([tile(fine, height, width, origin), tile(coarse, height, width, origin)], 1)


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.conv2(F.relu(self.conv1(F.relu(features))))


class ConfounderGenerator(HubModel):
    """Maps images (NCHW, [0, 1]) and optional labels to bounded noise δ with |δ| ≤ ε at every pixel.

    Args:
        in_channels: image channels the generator works on (3 for RGB, 1 for grayscale). ``protect`` converts
            other channel counts for it.
        num_classes: size of the label vocabulary (the classes of the training set, or owner codes). Row
            ``num_classes`` of the embedding is the "no label" code used when ``labels`` is ``None``.
        width: channels of the half-resolution body.
        num_blocks: residual blocks in the body.
        epsilon: L∞ bound of the noise, in [0, 1] image units (8/255 by default).
        predictor_width: width of the ``LabelPredictor`` that guesses the class of unlabeled images, so that the
            label-free path adds the noise of the guessed class; 0 for none (unlabeled images then get the
            "no label" code).
        predictor_resolution: the thumbnail size the label predictor classifies.
        upsampling: how the half-resolution body returns to full resolution: ``"pixel_shuffle"`` (four
            independent values per 2×2 block) or ``"bilinear"`` (one noise map at half resolution, interpolated).
        key_dim: numbers in an owner key's code (at least ``PATTERN_NUMBERS``) for a keyed generator; 0 for a
            generator conditioned on ``num_classes`` labels.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 32,
        num_blocks: int = 2,
        epsilon: float = 8 / 255,
        predictor_width: int = 0,
        predictor_resolution: int = 32,
        upsampling: str = "pixel_shuffle",
        key_dim: int = 0,
    ) -> None:
        super().__init__()
        check_epsilon(epsilon)
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got {upsampling!r}")
        if key_dim and (key_dim < PATTERN_NUMBERS or predictor_width):
            raise ValueError(f"a keyed generator needs key_dim >= {PATTERN_NUMBERS} and no label predictor "
                             f"(predictor_width=0), got key_dim={key_dim}, predictor_width={predictor_width}")
        self.stem = nn.Conv2d(in_channels + (PATTERN_CHANNELS if key_dim else 0), width, 3, stride=2, padding=1)
        if key_dim:
            self.key_projection = nn.Linear(key_dim, width)
        else:
            self.label_embedding = nn.Embedding(num_classes + 1, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(num_blocks)))
        # Pixel shuffle spreads four head channels over each 2×2 block; bilinear interpolates one channel.
        shuffle = upsampling == "pixel_shuffle"
        self.head = nn.Conv2d(width, in_channels * (4 if shuffle else 1), 3, padding=1)
        self.upsample = (nn.PixelShuffle(2) if shuffle
                         else nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        self.label_predictor = (LabelPredictor(in_channels, num_classes, predictor_width, predictor_resolution)
                                if predictor_width else None)

    @property
    def receptive_radius(self) -> int:
        """How far (in input pixels) one output pixel can see: the halo a tile needs to match a single pass."""
        # stem: 1 px at full resolution; each 3x3 conv of the body and the head: 1 px at half resolution = 2 px;
        # bilinear upsampling reads one more half-resolution pixel.
        half_resolution_radius = 2 * self.config.num_blocks + 1 + (self.config.upsampling == "bilinear")
        return 1 + 2 * half_resolution_radius + 2

    def label_codes(self, labels: torch.Tensor | int | Sequence[int] | None, batch_size: int) -> torch.Tensor:
        """Embedding rows for ``labels``: a LongTensor of shape (batch_size,).

        ``None`` (for all images) or -1 (for one image) selects the "no label" row, ``num_classes``.
        """
        num_classes = self.config.num_classes
        if labels is None:
            return torch.full((batch_size,), num_classes, dtype=torch.long, device=self.device)
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.device).reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(batch_size)
        if labels.numel() != batch_size:
            raise ValueError(f"got {labels.numel()} labels for {batch_size} images: pass one label per image, "
                             "one label for all of them, or None")
        if labels.numel() and (labels.min() < -1 or labels.max() >= num_classes):
            raise ValueError(f"labels must be in [0, {num_classes - 1}] (or -1 for no label) for this generator "
                             f"(num_classes={num_classes}), got {labels.min().item()}..{labels.max().item()}")
        return torch.where(labels < 0, num_classes, labels)

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | int | Sequence[int] | None = None,
        epsilon: float | None = None,
    ) -> torch.Tensor:
        """Returns the noise δ (same shape as ``images``), |δ| ≤ ``epsilon`` (the config's ε when None).

        A keyed generator takes key codes as ``labels``: a float tensor (N, key_dim), ``keys.key_codes(keys, dim)``.
        """
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(f"expected images of shape (N, {self.config.in_channels}, H, W), "
                             f"got {tuple(images.shape)}")
        if self.config.key_dim:
            if not (torch.is_tensor(labels) and labels.shape == (len(images), self.config.key_dim)):
                raise ValueError(f"a keyed generator takes key codes of shape ({len(images)}, "
                                 f"{self.config.key_dim}) as labels: see modeling_confounder.keys.key_codes")
            return self.noise(images, labels, epsilon)
        return self.noise(images, self.fill_unknown_labels(images, self.label_codes(labels, len(images))), epsilon)

    def fill_unknown_labels(self, images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Replaces the "no label" codes by the label predictor's guess for those images (when there is one)."""
        if self.config.key_dim:
            return codes
        unknown = codes == self.config.num_classes
        if self.label_predictor is None or not unknown.any():
            return codes
        with torch.no_grad():
            guesses = self.label_predictor(images[unknown]).argmax(1)
        return codes.masked_scatter(unknown, guesses)

    def noise(self, images: torch.Tensor, codes: torch.Tensor, epsilon: float | None = None,
              origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """The noise for label codes checked by ``label_codes`` (``num_classes`` means no label) or, for a keyed
        generator, key codes (N, key_dim); ``origin`` is where ``images`` starts in the whole image (tiles)."""
        epsilon = self.config.epsilon if epsilon is None else epsilon
        height, width = images.shape[-2:]
        inputs = images * 2 - 1
        if self.config.key_dim:
            codes = codes.to(images.dtype)
            # Images of one owner share a key: tile each distinct key's patterns once.
            keys, which = torch.unique(codes, dim=0, return_inverse=True)
            inputs = torch.cat([inputs, key_patterns(keys, height, width, origin)[which]], 1)
            condition = self.key_projection(codes)
        else:
            condition = self.label_embedding(codes)
        features = self.stem(inputs) + condition[:, :, None, None]
        features = self.blocks(features)
        noise = self.upsample(self.head(F.relu(features)))[..., :height, :width]
        return epsilon * torch.tanh(noise)
