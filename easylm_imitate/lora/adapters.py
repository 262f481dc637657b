"""Low-rank adapters on a model's projections, found from its parameter tree.

A projection is a parameter whose logical axes hold `embed` and no `vocab` and that has at
least two axes besides a leading `layers` axis. Its input axes are `embed` when that comes
first, else every axis but the last (which is then `embed`): `wq [layers, embed, heads,
head_dim]` maps embed -> (heads, head_dim); `wo [layers, heads, head_dim, embed]` maps
(heads, head_dim) -> embed. Its name is the parameter's path segment, normalised by
`NAME_TABLE` (so `wq`, `q_proj` and `query` are all `q`; GPT-2's `w_fc`/`w_proj` are
`up`/`down`); `config.lora.targets` is a regex fully matched against these names.

Each targeted projection gets `lora_a [layers?, in..., rank]` (gaussian, std 1/rank, as
peft's `init_lora_weights="gaussian"`; or `kaiming_uniform`, peft's default) and
`lora_b [layers?, rank, out...]` (zeros), whose logical axes are the projection's own
input/output axes plus `lora_rank` (never sharded): under every rule set they split like
the projection they modify. The effective weight is `W + (alpha / rank) * A @ B`.
"""

from __future__ import annotations

import dataclasses
import re
import string

import jax
import jax.numpy as jnp
import ml_collections

from easylm_imitate.lora import quant

RANK_AXIS = "lora_rank"
INITS = ("gaussian", "kaiming_uniform")
BASE_DTYPES = ("float32", "bfloat16") + quant.KINDS
# Parameter path segments -> projection names (add a row when a model names them differently).
NAME_TABLE = {
    "wq": "q", "q_proj": "q", "query": "q", "q": "q",
    "wk": "k", "k_proj": "k", "key": "k", "k": "k",
    "wv": "v", "v_proj": "v", "value_proj": "v", "v": "v",
    "wo": "o", "o_proj": "o", "out_proj": "o", "o": "o",
    "w_gate": "gate", "gate_proj": "gate", "gate": "gate",
    "w_up": "up", "up_proj": "up", "up": "up", "w_fc": "up", "c_fc": "up", "fc": "up",
    "w_down": "down", "down_proj": "down", "down": "down", "w_proj": "down", "c_proj": "down",
}
# Path segments that name a module's weight rather than the projection itself.
_GENERIC = {"kernel", "weight", "w", "value", "embedding"}


class LoraConfigError(ValueError):
    """A `config.lora` field that cannot be used; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Projection:
    """One projection parameter: where it sits, its name, shape, logical axes and layout."""

    path: tuple[str, ...]
    name: str
    shape: tuple[int, ...]
    axes: tuple
    lead: int  # leading stacked (`layers`) axes
    in_dims: int

    @property
    def key(self) -> str:
        """The parameter's path joined with '/' (e.g. `blocks/wq`)."""
        return "/".join(self.path)

    def _parts(self):
        lead, i = self.lead, self.lead + self.in_dims
        return (self.shape[:lead], self.shape[lead:i], self.shape[i:]), (self.axes[:lead], self.axes[lead:i], self.axes[i:])

    def adapter_shapes(self, rank: int) -> dict[str, tuple]:
        """Shapes of `lora_a` and `lora_b`."""
        (lead, ins, outs), _ = self._parts()
        return {"lora_a": lead + ins + (rank,), "lora_b": lead + (rank,) + outs}

    def adapter_axes(self) -> dict[str, tuple]:
        """Logical axes of `lora_a` and `lora_b`, derived from the projection's."""
        _, (lead, ins, outs) = self._parts()
        return {"lora_a": lead + ins + (RANK_AXIS,), "lora_b": lead + (RANK_AXIS,) + outs}

    @property
    def fan_in(self) -> int:
        """Number of input features."""
        n = 1
        for s in self.shape[self.lead:self.lead + self.in_dims]:
            n *= s
        return n

    def delta(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """A @ B contracted over the rank, in the projection's layout (shape `self.shape`)."""
        letters = iter(string.ascii_letters)
        lead = "".join(next(letters) for _ in range(self.lead))
        ins = "".join(next(letters) for _ in range(self.in_dims))
        outs = "".join(next(letters) for _ in range(len(self.shape) - self.lead - self.in_dims))
        r = next(letters)
        return jnp.einsum(f"{lead}{ins}{r},{lead}{r}{outs}->{lead}{ins}{outs}", a, b)


def normalise_name(path: tuple[str, ...]) -> str:
    """The projection name of a parameter path: its last non-generic segment, through NAME_TABLE."""
    for seg in reversed(path):
        if seg not in _GENERIC:
            return NAME_TABLE.get(seg, seg)
    return path[-1]


def _projection(path: tuple[str, ...], shape: tuple[int, ...], axes: tuple) -> Projection | None:
    if len(axes) != len(shape) or "embed" not in axes or "vocab" in axes or None in axes:
        return None
    lead = 1 if axes and axes[0] == "layers" else 0
    rest = axes[lead:]
    if len(rest) < 2:
        return None
    if rest[0] == "embed":
        in_dims = 1
    elif rest[-1] == "embed":
        in_dims = len(rest) - 1
    else:
        return None
    return Projection(path, normalise_name(path), tuple(shape), tuple(axes), lead, in_dims)


def find_projections(abstract_state) -> list[Projection]:
    """Every projection of a model's (abstract) NNX parameter state, in path order."""
    from flax import nnx

    found = []
    for path, var in nnx.to_flat_state(abstract_state):
        axes = tuple(getattr(var, "logical_axes", ()) or ())
        shape = tuple(var.get_value().shape) if hasattr(var, "get_value") else tuple(var.value.shape)
        proj = _projection(tuple(str(p) for p in path), shape, axes)
        if proj is not None:
            found.append(proj)
    return found


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """What a LoRA run adapts and how: hashable, so it can be a static argument."""

    rank: int
    alpha: float
    targets: tuple[Projection, ...]
    projections: tuple[Projection, ...]
    init: str = "gaussian"
    base_dtype: str = "float32"
    dropout: float = 0.0

    @property
    def scale(self) -> float:
        """alpha / rank, the factor on A @ B."""
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        """JSON-able description (checkpoint meta, adapter_config)."""
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "init": self.init,
                "base_dtype": self.base_dtype, "targets": [p.key for p in self.targets],
                "target_names": sorted({p.name for p in self.targets})}


def enabled(config) -> bool:
    """Whether a training config asks for LoRA (`config.lora.rank` > 0)."""
    lora = config.get("lora") if isinstance(config, ml_collections.ConfigDict) else getattr(config, "lora", None)
    return bool(lora is not None and lora.get("rank", 0))


def make_spec(lora_cfg, projections: list[Projection]) -> LoraSpec:
    """Validate `config.lora` against the model's projections; LoraConfigError naming the field."""
    rank, alpha = int(lora_cfg.rank), float(lora_cfg.alpha)
    if rank <= 0:
        raise LoraConfigError(f"lora.rank: must be a positive integer, got {lora_cfg.rank!r}")
    if lora_cfg.init not in INITS:
        raise LoraConfigError(f"lora.init: unknown init {lora_cfg.init!r} (expected one of {INITS})")
    if lora_cfg.base_dtype not in BASE_DTYPES:
        raise LoraConfigError(f"lora.base_dtype: unknown {lora_cfg.base_dtype!r} (expected one of {BASE_DTYPES})")
    dropout = float(lora_cfg.dropout)
    if not 0.0 <= dropout < 1.0:
        raise LoraConfigError(f"lora.dropout: must be in [0, 1), got {lora_cfg.dropout!r}")
    try:
        pattern = re.compile(lora_cfg.targets)
    except re.error as e:
        raise LoraConfigError(f"lora.targets: invalid regex {lora_cfg.targets!r} ({e})") from None
    targets = tuple(p for p in projections if pattern.fullmatch(p.name) or pattern.fullmatch(p.key))
    if not targets:
        names = sorted({p.name for p in projections})
        raise LoraConfigError(f"lora.targets: {lora_cfg.targets!r} matches no projection of this model; "
                              f"its projections are: {', '.join(names)} ({', '.join(p.key for p in projections)})")
    outside = [p.key for p in targets if p.path[0] != "blocks" or len(p.path) != 2 or not p.lead]
    if outside:
        raise LoraConfigError(f"lora.targets: {lora_cfg.targets!r} matches projections outside the layer stack "
                              f"({', '.join(outside)}); adapters go on the stacked block projections only")
    return LoraSpec(rank, alpha, targets, tuple(projections), lora_cfg.init, lora_cfg.base_dtype, dropout)


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _get(tree, path: tuple[str, ...]):
    for p in path:
        tree = tree[p]
    return tree


def adapter_shapes(spec: LoraSpec) -> dict:
    """Pure dict (mirroring the parameter paths) of ShapeDtypeStructs of the adapters."""
    tree: dict = {}
    for p in spec.targets:
        for name, shape in p.adapter_shapes(spec.rank).items():
            _set(tree, p.path + (name,), jax.ShapeDtypeStruct(shape, jnp.float32))
    return tree


def adapter_axes(spec: LoraSpec) -> dict:
    """Pure dict of the adapters' logical axes."""
    tree: dict = {}
    for p in spec.targets:
        for name, axes in p.adapter_axes().items():
            _set(tree, p.path + (name,), axes)
    return tree


def init_adapters(spec: LoraSpec, seed: int) -> dict:
    """Fresh adapters: A gaussian (std 1/rank) or kaiming-uniform, B zeros (so W is unchanged)."""
    tree: dict = {}
    key = jax.random.key(seed)
    for i, p in enumerate(spec.targets):
        shapes = p.adapter_shapes(spec.rank)
        k = jax.random.fold_in(key, i)
        if spec.init == "gaussian":
            a = jax.random.normal(k, shapes["lora_a"], jnp.float32) / spec.rank
        else:  # kaiming_uniform(a=sqrt(5)) as torch/peft: bound 1/sqrt(fan_in)
            bound = 1.0 / (p.fan_in ** 0.5)
            a = jax.random.uniform(k, shapes["lora_a"], jnp.float32, -bound, bound)
        _set(tree, p.path + ("lora_a",), a)
        _set(tree, p.path + ("lora_b",), jnp.zeros(shapes["lora_b"], jnp.float32))
    return tree


def store_base(params: dict, spec: LoraSpec) -> dict:
    """The frozen base as kept during training: projections quantised (int8/nf4) or cast
    (bfloat16) per `spec.base_dtype`; everything else as given."""
    if spec.base_dtype == "float32":
        return params
    out = jax.tree.map(lambda x: x, params)
    for p in spec.projections:
        w = _get(params, p.path)
        if spec.base_dtype == "bfloat16":
            stored = w.astype(jnp.bfloat16)
        else:
            stored = quant.quantize(w, spec.base_dtype, p.axes, p.lead, p.in_dims)
        _set(out, p.path, stored)
    return out


def effective_params(base: dict, adapters: dict, spec: LoraSpec, dtype) -> dict:
    """The adapted model's parameters with the adapters merged in: targeted projections
    `W + scale * A @ B` in `dtype`, other quantised projections dequantised to `dtype`,
    everything else as stored (for loading and export; the train step adds the adapters
    unmerged inside the layer scan instead)."""
    out = jax.tree.map(lambda x: x, base, is_leaf=quant.is_quantized)
    for p in spec.projections:
        w = _get(base, p.path)
        if quant.is_quantized(w):
            _set(out, p.path, w.dequantize(dtype))
    for p in spec.targets:
        w = _get(out, p.path).astype(dtype)
        a, b = _get(adapters, p.path + ("lora_a",)), _get(adapters, p.path + ("lora_b",))
        _set(out, p.path, w + (spec.scale * p.delta(a.astype(dtype), b.astype(dtype))).astype(dtype))
    return out


def merged_params(base: dict, adapters: dict, spec: LoraSpec) -> dict:
    """Plain float32 parameters of the adapted model (the dequantised base for QLoRA)."""
    return effective_params(base, adapters, spec, jnp.float32)
