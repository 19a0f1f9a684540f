"""Benchmark: ConfounderGAN against EM, TAP and simple baselines, under the defenses a data scraper would use.

For methods × victims × defenses × victim seeds, one run protects the training set, trains a victim (a timm
model from scratch, an ImageNet-pretrained one fine-tuned or probed, or a 🤗 transformers model with the
``Trainer``) on it and tests the victim on clean test images after its last epoch. With the ``photos`` option the
protected sets first go through the full-size photos their owners publish (``training.photos``). It writes
``results.json``, ``results.md`` (sanity rows first, then the mean ± standard error of each cell over the seeds,
with the CPU-seconds that made each protected set) and PNG figures. Every method works within the same L∞ budget
ε = 8/255; the methods and their papers are in ``training/methods/``, the defenses in ``training/defenses.py``.

    python -m training.benchmark --protocol quick --estimate_only   # the plan and its time, then stop
    python -m training.benchmark --protocol quick --output_dir results/benchmark-quick
    python -m training.benchmark --protocol defenses --output_dir results/benchmark-defenses   # resumable
    python -m training.benchmark --protocol quick --methods clean random em --victim_seeds 0 --options seed=1
    python -m training.benchmark --protocol pretrained --output_dir results/benchmark-pretrained
    python -m training.benchmark --protocol clothing --output_dir results/benchmark-clothing   # resumable
    python -m training.benchmark --protocol full --options method_budget=3600

A protocol (``protocols.py``: ``quick``, ``defenses``, ``pretrained`` and ``clothing`` for 2 CPU cores, ``full`` for
a GPU) sets the defaults; flags and ``--options KEY=VALUE`` override them. The last ``validation_rows`` training
rows stay clean as validation images, which the per-epoch curves watch; the test rows only report. Defenses other
than ``none`` train the first victim only, on the ``--defense_methods``; ``transfer`` remakes the
``--transfer_methods`` with the ``transfer_surrogate`` option (surrogate A) and trains every victim (B, C) on them.
Under ``partial20/50/80``, ``clean`` is the victim trained on the unprotected images alone. Protected training sets
are cached in ``--cache_dir`` under a hash of the method's settings and of the exact training images, and a rerun
into the same ``--output_dir`` with the same settings keeps the victims already trained, so a stopped run resumes.

Modules: ``protocols`` (protocols, options, the command line), ``plan`` (cells, time estimates), ``cache``
(protected sets on disk), ``runner`` (workers, scheduling, resuming, ``main``), ``report`` (the per-cell
experiment, metrics, sanity rows), ``markdown`` (the report's tables), ``figures``.
"""
