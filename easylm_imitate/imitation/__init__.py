"""Querying a target model: a journaled OpenAI-compatible client, NQ-synthetic, response collection."""

from easylm_imitate.imitation.batch_api import BatchClient
from easylm_imitate.imitation.client import ChatClient, ChatResult, FatalAPIError, api_key_from_env
from easylm_imitate.imitation.cost import Budget, BudgetExhausted, Prices
from easylm_imitate.imitation.collection import CollectConfig, collect, collect_to_file
from easylm_imitate.imitation.nq_generate import NQSyntheticConfig, generate, generate_to_file
from easylm_imitate.imitation.prompts import Prompt, read_prompts

__all__ = ["BatchClient", "Budget", "BudgetExhausted", "ChatClient", "ChatResult", "CollectConfig", "FatalAPIError",
           "NQSyntheticConfig", "Prices", "Prompt",
           "api_key_from_env", "collect", "collect_to_file", "generate", "generate_to_file", "read_prompts"]
