"""OpenAI-compatible request bodies (pydantic) and the OpenAI error body."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

MAX_N = 16
# OpenAI allows 4 stop strings, but clients send more (lm-evaluation-harness appends the
# tokenizer's EOS string to a task's own); stop strings are checked on the host between
# decode chunks, so a few dozen cost little.
MAX_STOP = 64
MAX_LOGPROBS = 5  # legacy completions `logprobs`
MAX_TOP_LOGPROBS = 20  # chat `top_logprobs`


class APIError(Exception):
    """A request the server refuses: HTTP status plus the OpenAI error fields (and HTTP
    headers to send with it, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        """The JSON body OpenAI clients parse: {"error": {message, type, param, code}}."""
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Request(BaseModel):
    # Strict types (no "5" -> 5); unknown fields other clients send are ignored.
    model_config = ConfigDict(strict=True, extra="ignore")

    model: StrictStr
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int = Field(0, ge=0)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stop: StrictStr | list[StrictStr] | None = None
    seed: int | None = None

    def stop_list(self) -> list[str]:
        """Stop strings as a list (at most MAX_STOP)."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


class TextPart(BaseModel):
    """One part of a message's content given as a list (only text is supported)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart]

    def text(self) -> str:
        """The content as one string."""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(_Request):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


class CompletionRequest(_Request):
    """POST /v1/completions (legacy), including echo and prompt log-probs."""

    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    max_tokens: int = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
