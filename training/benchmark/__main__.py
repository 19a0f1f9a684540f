"""``python -m training.benchmark``: see the package docstring."""

from .runner import main

main()
