"""`--compile_only` plans a LoRA / QLoRA run: the frozen base (float32 or nf4) is counted
beside the adapters and their optimizer state, without reading any weights, and a quantised
base is never dequantised whole."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from support.train_helpers import REPO, env_with_devices

LLAMA_7B = os.path.join(REPO, "configs", "llama_7b_imitation.py")
GIB = 1024 ** 3


def _start(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "easylm_imitate.train", f"--config={LLAMA_7B}", "--compile_only",
           "--config.batch_size=8", "--config.seq_length=128", "--config.lora.rank=16", *args]
    return subprocess.Popen(cmd, env=env_with_devices(8), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _gib(output: str, label: str) -> float:
    return float(re.search(rf"{label}\s+([0-9.]+) GiB", output).group(1))


def test_lora_and_qlora_plans_for_llama_7b_count_the_frozen_base_and_small_adapters():
    from easylm_imitate.models import get_preset

    procs = {kind: _start(f"--config.lora.base_dtype={kind}") for kind in ("float32", "nf4")}
    outs = {}
    for kind, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        outs[kind] = out
    cfg = get_preset("llama-7b")
    d, f, n, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.vocab_size
    projections = n * (4 * d * d + 3 * d * f)
    rest = cfg.num_params() - projections  # embeddings, head, norms stay float32
    assert "LoRA rank 16 on q|k|v|o|gate|up|down, base nf4" in outs["nf4"]
    assert abs(_gib(outs["float32"], "frozen base") - cfg.num_params() * 4 / 8 / GIB) < 0.02
    nf4 = (projections * (4 + 32 / 64) / 8 + rest * 4) / 8 / GIB  # 4-bit codes + a float32 scale per 64
    assert abs(_gib(outs["nf4"], "frozen base") - nf4) < 0.02
    adapters = n * 16 * (4 * 2 * d + 3 * (d + f)) * 4 / GIB  # float32 A and B, before sharding
    for out in outs.values():
        assert _gib(out, "adapters") <= adapters + 0.01
        assert _gib(out, "optimizer state") <= 2 * adapters + 0.01  # AdamW moments of the adapters only
    assert _gib(outs["nf4"], r"total \(peak\)") < _gib(outs["float32"], r"total \(peak\)") - 2
    # The nf4 base is dequantised one layer at a time inside the layer scan: its step's
    # temporaries are short of the float base's by at least one bfloat16 copy of the
    # projections (the float base is cast as a whole; a whole dequantised copy would be more).
    bf16_copy = projections * 2 / 8 / GIB
    assert _gib(outs["nf4"], "activations\+temp") < _gib(outs["float32"], "activations\+temp") - bf16_copy
