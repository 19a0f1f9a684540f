"""One markdown table from several ``training.evaluate`` JSON reports (for the README and model card).

    python -m training.summarize results/eval_*.json           # one row per victim run
    python -m training.summarize --means results/eval_*.json   # one row per cell, over victim seeds
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SETTING_ORDER = ("clean", "labels", "owner", "label-free")


def summarize(paths: list[Path], means: bool = False, metric: str = "test_acc") -> str:
    """One row per victim run, or with ``means`` one row per cell (victim, rows, generator, setting), of ``metric``:
    ``test_acc`` or ``balanced_test_acc`` (the mean of the per-class accuracies)."""
    runs = []  # (sort key, cell columns, run columns, test accuracy)
    for path in paths:
        report = json.loads(path.read_text())
        rows = report["train_rows"]
        rows = f"{rows[0]:,}–{rows[1] - 1:,}" if rows else "all"
        generator = Path(report["generator"]).name
        weights = (report.get("generator_weights") or "–")[:7]  # "–": clean data, or reports without it
        for run in report["runs"]:
            setting = run["setting"]
            quality = report["quality"].get(setting)
            agreement = report.get("label_agreement") if setting == "label-free" else None
            # Grouped by victim, then training rows, then setting, whatever order the files come in.
            # Reports without a victim seed show "–".
            seed = run.get("seed")
            key = (run["victim"], report["epochs"], tuple(report["train_rows"] or [0]),
                   SETTING_ORDER.index(setting), generator, -1 if seed is None else seed)
            cell = (f"{run['victim']} ({report['epochs']})", rows, "–" if setting == "clean" else generator, setting)
            columns = ("–" if setting == "clean" else weights, "–" if seed is None else str(seed),
                       f"{run['test_acc']:.1%}", f"{run['best_test_acc']:.1%}",
                       f"{run['train_acc']:.1%}", "–" if agreement is None else f"{agreement:.1%}",
                       *((f"{quality['psnr']:.1f} dB", "–" if quality["ssim"] is None else f"{quality['ssim']:.3f}",
                          f"{quality['linf_pixels']}/255")
                         if quality else ("–", "–", "–")))
            runs.append((key, cell, columns, run[metric]))
    runs.sort(key=lambda run: run[0])
    if not means:
        return "\n".join([("| victim (epochs) | training rows | generator | setting | weights | victim seed | "
                           "clean test acc | best | victim train acc | label agreement | PSNR | SSIM | max abs δ |"),
                          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
                          *(f"| {' | '.join(cell + columns)} |" for _, cell, columns, _ in runs)])
    cells: dict[tuple[str, ...], list[float]] = {}
    for _, cell, _, accuracy in runs:
        cells.setdefault(cell, []).append(accuracy)
    name = "balanced clean test acc" if metric == "balanced_test_acc" else "clean test acc"
    header = (f"| victim (epochs) | training rows | generator | setting | victim runs | {name}, each run | mean | "
              "standard error |")

    def standard_error(accuracies: list[float]) -> str:
        return f"{statistics.stdev(accuracies) / len(accuracies) ** 0.5:.1%}" if len(accuracies) > 1 else "–"

    return "\n".join([header, "| --- | --- | --- | --- | --- | --- | --- | --- |",
                      *(f"| {' | '.join(cell)} | {len(accuracies)} | "
                        f"{' / '.join(f'{accuracy:.1%}' for accuracy in accuracies)} | "
                        f"{statistics.mean(accuracies):.1%} | {standard_error(accuracies)} |"
                        for cell, accuracies in cells.items())])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="JSON reports of python -m training.evaluate")
    parser.add_argument("--means", action="store_true", help="one row per cell: each victim run and their mean")
    parser.add_argument("--balanced", action="store_true",
                        help="the balanced clean test accuracy (mean of the per-class accuracies) in the means")
    arguments = parser.parse_args(argv)
    table = summarize(arguments.reports, arguments.means, "balanced_test_acc" if arguments.balanced else "test_acc")
    print(table)
    return table


if __name__ == "__main__":
    main()
