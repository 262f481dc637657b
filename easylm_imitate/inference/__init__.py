"""Generation and scoring for checkpoints: KV-cache sampler, log-likelihoods, an
OpenAI-compatible server (`easylm_imitate.inference.server`)."""

from easylm_imitate.inference.engine import Engine, GenRequest, GenResult
from easylm_imitate.inference.sampler import Generation, Sampler
from easylm_imitate.inference.sampling import SamplingParams
from easylm_imitate.inference.scoring import Scorer, SequenceScores

__all__ = ["Engine", "GenRequest", "GenResult", "Generation", "Sampler", "SamplingParams", "Scorer",
           "SequenceScores"]
