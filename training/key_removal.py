"""What can someone who learns an owner's key do? Estimate the noise of a protected photo and subtract it.

The attack: protect the *protected* photo again with the same key; the generator's noise depends on the key far
more than on the photo, so that second noise estimates the first, and subtracting it removes most of it. With a
wrong key the estimate is unrelated and nothing is removed. Reports, per photo, the noise left (RMS, in pixel
levels) after subtracting the estimate made with the right key and with a wrong one, and the correlation between
the estimate and the true noise.

    python -m training.key_removal --model modeling_confounder/keyed_model examples/*.png \
        --output_json results/keys/key-removal.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from modeling_confounder import DEFAULT_MODEL, ConfounderGenerator, protect

from .victim import write_report

KEY, WRONG_KEY = "the owner's key", "someone else's key"


def removal(generator: ConfounderGenerator, image: np.ndarray) -> dict[str, float]:
    """The noise of ``image`` protected with ``KEY``, and what is left of it after each attack, RMS in levels."""
    protected = protect(generator, image[None], key=KEY)[0].astype(np.float64)
    noise = protected - image

    def left_after(key: str) -> tuple[float, np.ndarray]:
        estimate = protect(generator, protected.astype(np.uint8)[None], key=key)[0] - protected
        return float(np.sqrt(np.mean((protected - estimate - image) ** 2))), estimate

    left_right, estimate = left_after(KEY)
    left_wrong, _ = left_after(WRONG_KEY)
    return {"noise_rms": float(np.sqrt(np.mean(noise**2))), "left_with_the_key_rms": left_right,
            "left_with_a_wrong_key_rms": left_wrong,
            "estimate_correlation": float(np.corrcoef(estimate.ravel(), noise.ravel())[0, 1])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", nargs="+", type=Path, help="image files to protect and attack")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a keyed generator (folder or Hub id)")
    parser.add_argument("--output_json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    generator = ConfounderGenerator.from_pretrained(args.model)
    if not generator.config.key_dim:
        parser.error(f"{args.model} is not a keyed generator")
    report = {"model": str(args.model), "photos": {}}
    for path in args.photos:
        image = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
        report["photos"][path.name] = result = removal(generator, image)
        print(f"{path.name:20s} noise {result['noise_rms']:.2f} levels RMS; left after subtracting the estimate "
              f"made with the key {result['left_with_the_key_rms']:.2f}, with a wrong key "
              f"{result['left_with_a_wrong_key_rms']:.2f} (correlation {result['estimate_correlation']:.2f})")
    write_report(report, args.output_json)
    return report


if __name__ == "__main__":
    main()
