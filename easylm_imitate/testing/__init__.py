"""Test and dry-run helpers: a loopback OpenAI-compatible server with fault injection."""

from easylm_imitate.testing.openai_stub import Fault, FaultPlan, OpenAIStub, RequestRecord

__all__ = ["Fault", "FaultPlan", "OpenAIStub", "RequestRecord"]
