"""The report as markdown: the header (data, budget, victims, machine), sanity rows, the mean ± standard error
tables (no defense, each defense, transfer), image quality and cost, and every run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from training.pretrained import PRETRAINED_VICTIMS
from training.transformers_models import TRANSFORMERS_VICTIMS

from .report import headline_name, mean_and_error, sanity_checks, seed_values


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def protected_class(run: dict) -> str:
    if "protected_class" not in run:
        return "–"
    return (f"{percent(run['protected_class_acc'])} (class {run['protected_class']}; "
            f"others {percent(run['other_classes_acc'])})")


def wall_time(report: dict) -> str:
    text = (f"{report['seconds'] / 60:.0f} min (estimated at the start: "
            f"{report['estimate']['total_seconds'] / 60:.0f} min)")
    if cached := [label for label in report.get("cached", []) if label in report["speed"]]:
        minutes = sum(report["speed"][label]["generate_seconds"] for label in cached) / 60
        text += (f"; the protected sets of {', '.join(cached)} came from the cache, so the {minutes:.1f} min "
                 "it took to make them (their `generate_seconds`) are not in it")
    if resumed := report.get("resumed_runs"):
        text += (f"; {resumed} victims came from earlier runs of the same settings, which took "
                 f"{report.get('earlier_seconds', 0) / 60:.0f} min more")
    return text


def skipped_line(report: dict) -> list[str]:
    """The planned victims that --time_limit_minutes left out, as a list item (none: no line)."""
    skipped = report.get("skipped")
    if not skipped:
        return []
    if len(skipped) > 10:  # a resumable protocol cut short: say how much is left, seed by seed
        seeds = Counter(cell.get("seed", 0) for cell in skipped)
        cells = f"{len(skipped)} victims ({', '.join(f'seed {seed}: {count}' for seed, count in seeds.items())})"
    else:
        cells = ", ".join(f"{cell['method']} on {cell['victim']} ({cell['defense']}, seed {cell.get('seed', 0)})"
                          for cell in skipped)
    return [f"- **Not run** (over `--time_limit_minutes`): {cells}."]


def recipe(victim: str) -> str:
    """How a victim trains: from scratch (timm, or 🤗 transformers with the Trainer) or from ImageNet weights."""
    if victim in PRETRAINED_VICTIMS:
        return "ImageNet-pretrained, " + ("a linear probe" if PRETRAINED_VICTIMS[victim] else "fine-tuned")
    return "from scratch with the 🤗 Trainer" if victim in TRANSFORMERS_VICTIMS else "from scratch"


def victim_line(report: dict) -> str:
    """The victims: epochs, bfloat16, family, and white-box (the surrogate's family) or held out."""
    bf16 = set(report.get("bf16_victims", []))
    architectures = report.get("architectures", {})

    def describe(victim: str, epochs: int) -> str:
        found = architectures.get(victim)
        if found is None:
            return f"{victim} ({epochs} epochs)"
        side = "**white-box** (the surrogate's family)" if found["white_box"] else "held out"
        kind = f", {found['family']}{', depthwise' if found['depthwise'] else ''}, {side}"
        return f"{victim} ({recipe(victim)}, {epochs} epochs{', bfloat16 autocast' if victim in bf16 else ''}{kind})"

    planned = report.get("victim_seeds", [0])
    present = {run.get("seed", 0) for run in report["runs"]}
    seeds = ", ".join(str(seed) for seed in planned if seed in present)
    if not present >= set(planned):
        seeds += f" so far (of {', '.join(map(str, planned))}: the same command resumes the run)"
    line = (f"Victims, trained with crop + flip, each with seeds {seeds}: "
            + "; ".join(describe(victim, epochs) for victim, epochs in report["epochs"].items())
            + f". The surrogate of EM, TAP and the trained generator is {report['surrogate']}")
    if report.get("workers", 1) > 1:
        line += (f". {report['workers']} victims train at once, each in its own process with an equal share of "
                 "the threads")
    return line


def header_lines(report: dict) -> list[str]:
    """The title, the command and the run's data, budget, victims, machine, versions and wall time."""
    versions = ", ".join(f"{name} {value}" for name, value in report["versions"].items())
    validation, split = report.get("n_validation", 0), report.get("validation_split")
    kept = f"the split `{split}`" if split else "the last training rows"
    data = (f"`{report['dataset']}`, {report['n_train']} training images"
            + (f" (and {validation} more, {kept}, kept clean as validation images: they choose "
               "settings, the test rows only report)" if validation else "")
            + f", {report['n_test']} test images, {report['num_classes']} classes; majority-class rate of the "
            f"test set {percent(report['majority_rate'])}")
    budget = report.get("method_budget")
    recalls = " (the mean of the per-class recalls)" if report.get("balanced") else ""
    metric = headline_name(report).capitalize() + recalls
    budget_line = ("" if budget is None else f" EM, TAP and the trained generator each get {budget:.0f} "
                   "CPU-seconds to make their protected set, training included.")
    return [f"# Unlearnable-example benchmark, {report['protocol']} protocol", "",
            f"Regenerate with `{report['command']}`.", "", f"- Data: {data}.",
            f"- Every method within ε = {report['epsilon_levels']}/255 (L∞).{budget_line}",
            f"- {victim_line(report)}.",
            f"- {metric} is on clean test images after the last epoch: the mean ± standard error over the seeds.",
            *photo_lines(report),
            f"- Hardware: {report['hardware']}.", f"- Versions: {versions}.",
            f"- Wall time: {wall_time(report)}.", *skipped_line(report), ""]


def photo_lines(report: dict) -> list[str]:
    """How the photos went from their owners to the victims (none: no lines)."""
    lines = []
    if report.get("photos"):
        lines.append("- Photos: each method's noise, made on the photos' centre squares at the working resolution, "
                     "is resized to the full photo (bilinear) and added there, and the photo is rounded to whole "
                     "levels (its owner's PNG); the scraper resizes that published photo to the working resolution "
                     "(`training.photos`).")
    if report.get("crop_scale"):
        lines.append(f"- Every victim trains on random resized crops ({report['crop_scale']:.0%}–100 % of the area, "
                     "aspect 3/4–4/3) after the crop and flip.")
    return lines


def sanity_lines(report: dict) -> list[str]:
    lines = ["## Sanity", ""]
    checks = sanity_checks(report)
    if not checks:
        return lines + [("No sanity row applies: they need the clean method without defense. Include `clean` in "
                         "`--methods` and `none` in `--defenses` before trusting this report."), ""]
    return lines + ["If a row fails, fix the harness before reading anything else from this report.", "",
                    *table(["check", "result", "detail"],
                           [[name, "pass" if passed else "**FAIL**", detail] for name, passed, detail in checks])]


def mean_cell(values: list[float] | None) -> str:
    """A table cell: the mean ± standard error of a cell's seeds (– when it has none)."""
    if not values:
        return "–"
    mean, error = mean_and_error(values)
    return f"{mean:.1%}" + ("" if error is None else f" ± {error * 100:.1f}")


def cost(report: dict, label: str) -> str:
    """What making a protected set cost: CPU-seconds, or that the generator was trained before the run."""
    speed = report["speed"].get(label)
    if speed is None:
        return "none" if label.startswith("clean") else "–"
    seconds = "–" if speed.get("cpu_seconds") is None else f"{speed['cpu_seconds']:.0f}"
    return f"pre-trained, then {seconds}" if speed.get("pretrained") else seconds


def accuracy_lines(report: dict) -> list[str]:
    """The test accuracy tables: no defense (every victim, with what each set cost), each defense (the first
    victim), transfer."""
    runs = report["runs"]
    victims, methods, defenses = (list(dict.fromkeys(run[key] for run in runs))
                                  for key in ("victim", "method", "defense"))
    values = seed_values(report)

    def per_victim(chosen: list[str], defense: str, suffix: str = "") -> list[str]:
        return table(["method", "CPU-seconds to make the set", *victims],
                     [[method, cost(report, method + suffix),
                       *(mean_cell(values.get((method, victim, defense))) for victim in victims)]
                      for method in chosen])

    lines = ["## No defense", "", *per_victim(methods, "none")] if "none" in defenses else []
    if set(defenses) <= {"none", "transfer"}:
        return lines + transfer_lines(report, per_victim)
    lines += [f"## Defenses, {victims[0]}", ""]
    if any(run["method"] == "clean" and run["defense"].startswith("partial") for run in runs):
        lines += [("Under partial*N*, `clean` is the victim trained on the unprotected (100 − *N*) % alone: a "
                   "protection works there when its row is no better than that one."), ""]
    # One row per defense, one column per method: the threat-model table of the docs, as it is.
    lines += table(["defense", *methods], [[defense, *(mean_cell(values.get((method, victims[0], defense)))
                                                       for method in methods)] for defense in defenses])
    return lines + transfer_lines(report, per_victim)


def transfer_lines(report: dict, per_victim: Callable[..., list[str]]) -> list[str]:
    """The transfer table: the noise remade with the transfer surrogate, on every victim (none: no lines)."""
    transfer = [run for run in report["runs"] if run["defense"] == "transfer"]
    if not transfer:
        return []
    own = f" instead of {report['surrogate']}" if "surrogate" in report else ""
    return [f"## Transfer: the noise made with surrogate {transfer[0]['surrogate']}{own}", "",
            *per_victim(list(dict.fromkeys(run["method"] for run in transfer)), "transfer", "-transfer")]


def quality_lines(report: dict) -> list[str]:
    if not report["quality"]:
        return []

    def ssim(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    def published(quality: dict) -> list[str]:  # PSNR and largest change of the full photos, with photos
        photos = quality.get("published_photos")
        return [f"{photos['psnr_native']:.1f} dB", f"{photos['linf_pixels']}/255"] if photos else []

    photos = report.get("photos")
    return ["## Image quality, cost and speed", "",
            ("CPU-seconds: this process's CPU time while the method made the training set, its training "
             "included (pre-trained generators were trained before the run: see the model card)."
             + (" PSNR, SSIM and δ are measured on what the scraper takes, at the working resolution; the photos "
                "columns on the published photos' centre squares." if photos else "")), "",
            *table(["protected set", "PSNR", "SSIM", "max abs δ",
                    *(["photos' PSNR", "photos' max abs δ"] if photos else []), "CPU-seconds to make the set",
                    "wall seconds", "protect new images"],
                   [[label, f"{quality['psnr']:.1f} dB", ssim(quality["ssim"]), f"{quality['linf_pixels']}/255",
                     *published(quality), cost(report, label),
                     f"{report['speed'][label]['generate_seconds']:.1f} s",
                     f"{report['speed'][label]['images_per_second']:.0f} images/s"]
                    for label, quality in report["quality"].items()])]


def format_markdown(report: dict) -> str:
    runs_table = table(["method", "victim", "defense", "seed", "test acc", "balanced", "validation acc",
                        "train acc", "AUC", "protected class acc", "seconds"],
                       [[run["method"], run["victim"], run["defense"], str(run.get("seed", 0)),
                         percent(run["test_acc"]), percent(run.get("balanced_test_acc")),
                         percent(run.get("validation_acc")), percent(run["train_acc"]),
                         "–" if run["auc"] is None else f"{run['auc']:.3f}", protected_class(run),
                         f"{run['seconds']:.0f}"] for run in report["runs"]])
    return "\n".join([*header_lines(report), *sanity_lines(report), *accuracy_lines(report),
                      *quality_lines(report), "## All runs (every seed)", "", *runs_table])
