"""One markdown table from several ``evaluate_unlearnability.py`` JSON reports (for the README and model card).

    python training/summarize_evaluations.py results/eval_*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SETTING_ORDER = ("clean", "labels", "owner", "label-free")


def summarize(paths: list[Path]) -> str:
    lines = [("| victim (epochs) | training rows | generator | setting | victim seed | clean test acc | best | "
              "victim train acc | label agreement | PSNR | SSIM | max abs δ |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows_by_key = []
    for path in paths:
        report = json.loads(path.read_text())
        rows = report["train_rows"]
        rows = f"{rows[0]:,}–{rows[1] - 1:,}" if rows else "all"
        generator = Path(report["generator"]).name
        for run in report["runs"]:
            setting = run["setting"]
            quality = report["quality"].get(setting)
            agreement = report.get("label_agreement") if setting == "label-free" else None
            # Grouped by victim, then training rows, then setting, whatever order the files come in.
            # Reports written before --seeds did not record the victim seed: "–".
            seed = run.get("seed")
            key = (run["victim"], report["epochs"], report["train_rows"] or [0], SETTING_ORDER.index(setting),
                   generator, -1 if seed is None else seed)
            rows_by_key.append((key,
                f"| {run['victim']} ({report['epochs']}) | {rows} | "
                f"{'–' if setting == 'clean' else generator} | {setting} | {'–' if seed is None else seed} | "
                f"{run['test_acc']:.1%} | "
                f"{run['best_test_acc']:.1%} | {run['train_acc']:.1%} | "
                f"{'–' if agreement is None else f'{agreement:.1%}'} | "
                + (f"{quality['psnr']:.1f} dB | {quality['ssim']:.3f} | {quality['linf_pixels']}/255 |" if quality
                   else "– | – | – |")))
    return "\n".join(lines + [line for _, line in sorted(rows_by_key)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path)
    print(summarize(parser.parse_args().reports))
