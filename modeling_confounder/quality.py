"""How close a protected image is to its original: PSNR and SSIM, with bounded memory for any photo size.

The values are exactly scikit-image's on whole images (``data_range=255``, 7×7 uniform SSIM window, mean over
channels). scikit-image comes with the ``train`` and ``space`` extras; it is imported only when measuring.
"""

from __future__ import annotations

import math

import numpy as np

from .images import color_channels

SSIM_WINDOW = 7
"""scikit-image's default uniform SSIM window."""
STRIP_PIXELS = 1 << 20
"""Pixels per strip: bounds the float64 temporaries of one measurement to ~100 MB for any photo size."""


def image_quality(original: np.ndarray, protected: np.ndarray) -> tuple[float, float | None]:
    """PSNR (dB) and SSIM of the colour channels of two uint8 HWC images.

    Both are evaluated in horizontal strips: on a 50-megapixel photo, scikit-image's float64 temporaries would need
    ~20 GB at once. SSIM strips overlap by the window radius, so every kept value sees the same pixels as in one
    pass. PSNR is ``inf`` for identical images; SSIM is None for images smaller than the window.
    """
    from skimage.metrics import mean_squared_error, structural_similarity

    height, width = original.shape[:2]
    channels = color_channels(original.shape[-1])
    original, protected = original[..., :channels], protected[..., :channels]
    rows = max(SSIM_WINDOW, STRIP_PIXELS // width)

    squared_error = sum(mean_squared_error(original[top:top + rows], protected[top:top + rows])
                        * original[top:top + rows].size for top in range(0, height, rows))
    mse = squared_error / original.size
    psnr = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)

    if min(height, width) < SSIM_WINDOW:
        return psnr, None
    # scikit-image averages the SSIM map without a border of the window radius; the strips cover that interior.
    pad = SSIM_WINDOW // 2
    total, count = 0.0, 0
    for top in range(pad, height - pad, rows):
        bottom = min(top + rows, height - pad)
        _, ssim_map = structural_similarity(original[top - pad:bottom + pad], protected[top - pad:bottom + pad],
                                            data_range=255, channel_axis=-1, full=True)
        interior = ssim_map[pad:pad + bottom - top, pad:width - pad]
        total += interior.sum(dtype=np.float64)
        count += interior.size
    return psnr, total / count
