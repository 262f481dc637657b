"""Each named remat policy keeps exactly the tagged per-layer results it names (those the
backward pass reads) and recomputes the rest from the layer's input."""

import collections
import contextlib
import io
import re

import jax.numpy as jnp
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from easylm_imitate.models import build_model, get_preset, layers
from easylm_imitate.models.config import REMAT_POLICIES

B, T = 2, 16


def _layer_residuals(preset: str, remat: str) -> collections.Counter:
    """Shapes (without the leading layers axis) of what the scanned layers save, with counts."""
    cfg = get_preset(preset, remat=remat)
    graphdef, state = nnx.split(build_model(cfg))
    ids = jnp.zeros((B, T), jnp.int32)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_saved_residuals(lambda s: jnp.sum(nnx.merge(graphdef, s)(ids)), state)
    shapes = re.findall(r"^f32\[([\d,]+)\] output of scan", out.getvalue(), re.M)
    stacked = [tuple(map(int, s.split(","))) for s in shapes]
    return collections.Counter(s[1:] for s in stacked if s[0] == cfg.num_layers and s[1] == B)


def _expected(preset: str, names) -> collections.Counter:
    """The per-layer shapes of the layer input plus the tagged results `names`."""
    cfg = get_preset(preset)
    d, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.dim_per_head
    shapes = {"q_proj": (B, T, cfg.num_heads, hd), "k_proj": (B, T, cfg.kv_heads, hd),
              "v_proj": (B, T, cfg.kv_heads, hd), "o_proj": (B, T, d), "mlp_gate": (B, T, f),
              "mlp_up": (B, T, f), "mlp_down": (B, T, d), "attention": (B, T, cfg.num_heads, hd)}
    # mlp_down only feeds the residual sum, whose backward needs no value: never kept.
    names = [n for n in names if n != "mlp_down" and not (cfg.arch == "gpt2" and n == "mlp_gate")]
    return collections.Counter([(B, T, d)] + [shapes[n] for n in names])


def test_every_configurable_policy_is_defined():
    assert set(REMAT_POLICIES) == set(layers.REMAT_SAVES)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("remat", ["full", "save_qkv_proj", "save_dots_no_batch", "save_dots"])
def test_policy_saves_what_it_names(preset, remat):
    assert _layer_residuals(preset, remat) == _expected(preset, layers.REMAT_SAVES[remat])


def test_save_dots_keeps_the_projections_that_full_recomputes():
    full, dots = _layer_residuals("tiny-llama", "full"), _layer_residuals("tiny-llama", "save_dots")
    assert sum(full.values()) == 1 and sum(dots.values()) == 1 + (len(layers.PROJECTION_NAMES) - 1) + 1
