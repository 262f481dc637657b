"""Allows `python -m easylm_imitate.train`."""

from easylm_imitate.train.main import run

run()
