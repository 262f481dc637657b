"""`python -m easylm_imitate.train`: runs the trainer binary, easylm_imitate/train/main.py."""

from absl import flags

from easylm_imitate.train import main as _main

__doc__ = _main.__doc__  # absl's --help starts with the __main__ module's docstring
flags.adopt_module_key_flags(_main)  # so `--help` lists the trainer's flags

_main.run()
