"""Crowd rating: blind pairwise human evaluation of an imitation model against its target.

Public API: `load_study`, `invite`, `serve`, `results`, `export_csv` (what eval/rate.py runs),
`create_app` (the FastAPI app), `summarize`, `majority`, `fleiss_kappa`, `load_pairs`.
"""

from easylm_imitate.evaluation.rating.aggregate import TIE_RULE, fleiss_kappa, majority, summarize
from easylm_imitate.evaluation.rating.commands import export_csv, invite, load_study, results, serve
from easylm_imitate.evaluation.rating.pairs import Item, PairsError, load_pairs
from easylm_imitate.evaluation.rating.store import StudyError


def create_app(*args, **kwargs):
    """The FastAPI app (see easylm_imitate.evaluation.rating.app.create_app)."""
    from easylm_imitate.evaluation.rating.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["TIE_RULE", "Item", "PairsError", "StudyError", "create_app", "export_csv", "fleiss_kappa",
           "invite", "load_pairs", "load_study", "majority", "results", "serve", "summarize"]
