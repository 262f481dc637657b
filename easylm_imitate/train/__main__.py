"""Allows `python -m easylm_imitate.train`."""

from absl import flags

from easylm_imitate.train import main as _main

flags.adopt_module_key_flags(_main)  # so `--help` lists the trainer's flags

_main.run()
