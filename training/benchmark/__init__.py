"""Benchmark: ConfounderGAN against EM, TAP and simple baselines, under the defenses a data scraper would use.

For methods × victims × defenses, one run protects the training set, trains a victim (a timm model, from
scratch) on it and tests the victim on clean test images. It writes ``results.json``, ``results.md`` (tables,
sanity rows first) and PNG figures: test accuracy per epoch, a bar chart per defense, and clean / protected /
amplified-noise samples. Every method works within the same L∞ budget ε = 8/255; the methods and their papers
are in ``training/methods.py``, the defenses in ``training/defenses.py``.

    python -m training.benchmark --protocol quick --estimate_only   # the plan and its time, then stop
    python -m training.benchmark --protocol quick --output_dir results/benchmark-quick
    python -m training.benchmark --protocol quick --methods clean random em --defenses none grayscale jpeg10
    python -m training.benchmark --protocol quick --dataset_name ../shared/data/pneumoniamnist \\
        --output_dir results/benchmark-pneumonia
    python -m training.benchmark --protocol full --options em_rounds=10 tap_steps=50

A protocol (``protocols.py``: ``quick`` for 2 CPU cores within an hour, ``full`` for a GPU) sets the defaults;
flags and ``--options KEY=VALUE`` override them. Defenses other than ``none`` train the first victim only, on
the ``--defense_methods``; ``transfer`` remakes the ``--transfer_methods`` with the ``transfer_surrogate``
option (surrogate A) and trains every victim (B, C) on them. Under ``partial20/50/80``, ``clean`` is the
victim trained on the unprotected images alone, the reference a partial protection has to match. Protected
training sets are cached in ``--cache_dir`` under a hash of the method's settings and of the exact training
images, so a rerun only retrains victims.

Modules: ``protocols`` (protocols, options, the command line), ``plan`` (cells, time estimates), ``cache``
(protected sets on disk), ``runner`` (workers, scheduling, ``main``), ``report`` (the per-cell experiment,
metrics, sanity rows, markdown), ``figures``.
"""
