"""`python -m easylm_imitate.experiment`: runs the experiment binary, easylm_imitate/experiment/main.py."""

from absl import flags

from easylm_imitate.experiment import main as _main

__doc__ = _main.__doc__  # absl's --help starts with the __main__ module's docstring
flags.adopt_module_key_flags(_main)

_main.entry()
