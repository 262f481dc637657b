"""The study as one command: cells (base model x imitation data x seed) run through stages
(data subset, train, evaluations, results) that are idempotent and resumable.

Binary: `python -m easylm_imitate.experiment` (main.py). Config helpers: spec.py. Plan and
fingerprints: plan.py, fingerprint.py. Markers: markers.py. Launchers: launchers.py.
Stage binaries of our own: data_subset.py, heldout_loss.py, cell_results.py.
"""
