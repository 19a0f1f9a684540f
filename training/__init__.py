"""Training and evaluation of ConfounderGAN generators (Tian et al., NeurIPS 2022, arXiv 2212.01767).

Run the scripts as modules from the repository root: ``accelerate launch -m training.train``,
``python -m training.evaluate``, ``python -m training.speed``, ``python -m training.summarize``,
``python -m training.benchmark``. The other modules hold what they share:

- ``data``: image-classification splits in memory, and the data flags every script takes;
- ``models``: timm classifiers (surrogates, victims), the noise head h, weight digests;
- ``augmentation``: crop and flip, a scraper's grayscale and differentiable JPEG;
- ``losses``: the ConfounderGAN objective;
- ``gan``: training a generator (``train_generator``);
- ``fitting``: the one supervised classifier loop;
- ``victim``: training a victim on (protected) images and testing it on clean ones.
"""
