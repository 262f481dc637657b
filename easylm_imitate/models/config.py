"""Model shape and runtime options, with parameter counts and training FLOPs per token."""

from __future__ import annotations

import dataclasses
from typing import Literal

Arch = Literal["llama", "gpt2"]
# What each saves: `layers.REMAT_SAVES`.
REMAT_POLICIES = ("none", "full", "save_dots", "save_dots_no_batch", "save_qkv_proj")
ATTENTION_IMPLS = ("xla", "dot_product", "cudnn", "splash", "auto")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape of a decoder-only transformer plus how to run it.

    Shape fields follow Hugging Face names where one exists. Runtime fields (`dtype`,
    `remat`, `attention`) change how the model computes, never its parameters.
    """

    arch: Arch
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int | None = None  # None: same as num_heads (no GQA)
    head_dim: int | None = None  # None: hidden_size // num_heads
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    # Runtime options.
    dtype: str = "float32"  # compute dtype; parameters stay float32
    remat: str = "none"
    # xla | dot_product | cudnn | splash | auto: which attention kernel runs (models/attention.py;
    # auto = splash on TPU, cudnn on GPU for bfloat16/float16, else xla: `attention.resolve_impl`).
    attention: str = "xla"

    def __post_init__(self):
        if self.arch not in ("llama", "gpt2"):
            raise ValueError(f"arch: unknown architecture {self.arch!r} (expected 'llama' or 'gpt2')")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat: unknown policy {self.remat!r} (expected one of {REMAT_POLICIES})")
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention: unknown implementation {self.attention!r} (expected one of {ATTENTION_IMPLS})")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {self.dtype!r}")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.kv_heads}")

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (GQA groups)."""
        return self.num_kv_heads or self.num_heads

    @property
    def dim_per_head(self) -> int:
        """Size of one attention head."""
        return self.head_dim or self.hidden_size // self.num_heads

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain-dict form for JSON metadata."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Inverse of `to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    # ---- sizes ---------------------------------------------------------------
    def layer_params(self) -> int:
        """Parameters of one transformer block."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.dim_per_head
        q, kv = self.num_heads * hd, self.kv_heads * hd
        if self.arch == "llama":
            attn = d * q + 2 * d * kv + q * d
            return attn + 3 * d * f + 2 * d
        attn = d * q + 2 * d * kv + q * d + q + 2 * kv + d
        return attn + 2 * d * f + f + d + 4 * d

    def num_params(self) -> int:
        """Total parameter count (tied embeddings counted once)."""
        d, v = self.hidden_size, self.vocab_size
        total = self.num_layers * self.layer_params() + v * d
        if self.arch == "llama":
            total += d  # final norm
            if not self.tie_embeddings:
                total += v * d
        else:
            total += self.max_position_embeddings * d + 2 * d
        return total

    def flops_per_token(self, seq_length: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward), attention included.

        forward = 2 * (matmul parameters) + 2 * 2 * layers * seq_length * heads * head_dim
        where matmul parameters are the block weights plus the output projection to the
        vocabulary (embedding lookups and norms cost no matmul FLOPs), and the attention
        term counts QK^T and AV over the full (non-causal) `seq_length` window, the
        convention of the PaLM/MaxText MFU formula.
        """
        d, f, hd, v = self.hidden_size, self.intermediate_size, self.dim_per_head, self.vocab_size
        q, kv = self.num_heads * hd, self.kv_heads * hd
        mlp = (3 if self.arch == "llama" else 2) * d * f
        matmul_params = self.num_layers * (d * q + 2 * d * kv + q * d + mlp) + d * v
        attention = 2 * 2 * self.num_layers * seq_length * q
        return 3.0 * (2.0 * matmul_params + attention)
