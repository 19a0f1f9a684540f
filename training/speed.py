"""How fast is protection? Times ``modeling_confounder.protect`` on the hot paths and writes JSON.

Measures (ConfounderGAN, Tian et al., NeurIPS 2022, arXiv 2212.01767; uint8 images in, uint8 images out, ε from
the model):
- CIFAR-size throughput: a uint8 NHWC batch of 32×32 RGB images, images per second;
- one 1-megapixel photo (1000×1000 RGB PIL image), seconds;
- peak resident memory of a fresh process that loads the model and protects one 12-megapixel photo (4000×3000).

    python -m training.speed --output_json results/speed.json
    python -m training.speed --summarize results/speed-repeats/2026-11-29-folded-*.json

A benchmark, not a test: numbers depend on the machine, which is recorded with them. On a shared 2-core machine
images per second move by up to a fifth from run to run, so report several runs: ``--summarize`` prints the
median and range of each number over reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modeling_confounder import DEFAULT_MODEL, ConfounderGenerator
from modeling_confounder.pipeline import is_keyed, protect

from .victim import hardware_summary, write_report

# Peak resident memory from /proc (VmHWM, in kB): unlike ru_maxrss, it starts afresh at exec instead of
# inheriting the parent's high-water mark.
PEAK_MEMORY_SCRIPT = """
import re, sys, numpy as np
from PIL import Image
from modeling_confounder import ConfounderGenerator
from modeling_confounder.pipeline import is_keyed, protect
peak = lambda: int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
generator = ConfounderGenerator.from_pretrained(sys.argv[1])
photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8))
before = peak()
protect(generator, photo, key="speed" if generator.config.key_dim else None)
print(before, peak())
"""


def best_seconds(function: Callable[[], object], repeats: int) -> float:
    """The median time of ``repeats`` calls after a warm-up call."""
    function()  # warm-up: first calls pay for kernel selection and allocation
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def summarize(paths: list[Path]) -> dict:
    """Median, lowest and highest of each number over several reports of this script."""
    reports = [json.loads(path.read_text()) for path in paths]
    summary = {"reports": [str(path) for path in paths]}
    for key, value in reports[0].items():
        if isinstance(value, float):
            values = [report[key] for report in reports]
            summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    print(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summarize", nargs="+", type=Path, metavar="JSON",
                        help="summarize earlier reports instead of measuring")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the generator to time (folder or Hub id)")
    parser.add_argument("--cifar_images", type=int, default=8192, help="32x32 images per throughput measurement")
    parser.add_argument("--batch_size", type=int, default=512, help="protect's batch size for the 32x32 images")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (the median counts)")
    parser.add_argument("--output_json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.summarize:
        return summarize(args.summarize)

    generator = ConfounderGenerator.from_pretrained(args.model)
    key = "speed" if is_keyed(generator) else None  # one owner's key, as a person protecting their photos has
    rng = np.random.default_rng(0)
    cifar = rng.integers(0, 256, (args.cifar_images, 32, 32, 3), dtype=np.uint8)
    photo = Image.fromarray(rng.integers(0, 256, (1000, 1000, 3), dtype=np.uint8))
    cifar_seconds = best_seconds(lambda: protect(generator, cifar, key=key, batch_size=args.batch_size), args.repeats)
    photo_seconds = best_seconds(lambda: protect(generator, photo, key=key), args.repeats)
    measured = subprocess.run([sys.executable, "-c", PEAK_MEMORY_SCRIPT, str(args.model)], capture_output=True,
                              text=True, check=True).stdout.split()
    kilobytes_before, kilobytes_peak = (int(value) for value in measured)

    report = {
        "model": str(args.model),
        "hardware": hardware_summary(),
        "torch_threads": torch.get_num_threads(),
        "cifar_images_per_second": args.cifar_images / cifar_seconds,
        "megapixel_photo_seconds": photo_seconds,
        "twelve_megapixel_peak_rss_gb": kilobytes_peak / 1024**2,
        "twelve_megapixel_rss_before_protect_gb": kilobytes_before / 1024**2,
    }
    print(json.dumps(report, indent=2))
    write_report(report, args.output_json)
    return report


if __name__ == "__main__":
    main()
