"""The shell command of each stage: the binary a user could run by hand, with its flags."""

from __future__ import annotations

import os
import shlex
import sys

from easylm_imitate.experiment.spec import REPO

EVAL_BINARIES = {"style": "eval/style.py", "judge": "eval/judge.py", "nq": "eval/nq_open.py",
                 "mmlu": "eval/mmlu.py", "humaneval": "eval/humaneval.py", "toxicity": "eval/toxicity.py"}
MODULES = {"heldout_loss": "easylm_imitate.experiment.heldout_loss",
           "data": "easylm_imitate.experiment.data_subset",
           "results": "easylm_imitate.experiment.cell_results",
           "train": "easylm_imitate.train"}


def flag(name: str, value) -> str:
    """`--name=value` as absl parses it (booleans as --name / --noname, lists comma-joined)."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    elif isinstance(value, float):
        value = repr(value)
    return f"--{name}={value}"


def module_command(key: str, *flags: str) -> list[str]:
    """`python -m MODULE flags...` for one of the stage modules."""
    return [sys.executable, "-m", MODULES[key], *flags]


def eval_binary(kind: str) -> list[str]:
    """The interpreter and script (or module) that runs evaluation `kind`."""
    if kind in MODULES:
        return [sys.executable, "-m", MODULES[kind]]
    script = os.path.join(REPO, EVAL_BINARIES[kind])
    return [sys.executable, script]


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_overrides(file_config: dict, wanted: dict) -> list[str]:
    """`--config.a.b=v` for every leaf of `wanted` that differs from the config file's value
    (both resolved nested dicts), so `--config=FILE` plus these flags gives `wanted`."""
    base, target = _leaves(file_config), _leaves(wanted)
    extra = sorted(set(target) - set(base))
    if extra:
        raise ValueError(f"cell training config has keys its config file lacks: {', '.join(extra)}")
    out = []
    for key in sorted(target):
        value = target[key]
        if value == base[key] and type(value) is type(base[key]):
            continue
        if value is None:
            raise ValueError(f"cannot pass config.{key}={value!r} on a command line")
        out.append(flag(f"config.{key}", value))
    return out


def shell_line(argv: list[str]) -> str:
    """`argv` as one line a POSIX shell runs unchanged."""
    return " ".join(shlex.quote(a) for a in argv)
