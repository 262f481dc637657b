"""NQ-synthetic: ask the target for QA pairs like 5 random seeds, keep unique clean ones until enough.

Call i always sends the same request (its 5 seeds come from a generator seeded by (seed, i) and
its `seed` field is derived from (seed, i)), so a rerun over the same journal replays every
finished call for free and continues where the crash left it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections import Counter

from tqdm.auto import tqdm

from easylm_imitate.data.schema import make_record, record_id
from easylm_imitate.fileio import write_json_atomic, write_jsonl_atomic
from easylm_imitate.imitation.contamination import load_eval_questions
from easylm_imitate.imitation.qa_pairs import (SEEDS_PER_PROMPT, QAPair, build_prompt, load_seeds, normalize_question,
                                               parse_qa)

SOURCE = "nq_synthetic"


@dataclasses.dataclass
class NQSyntheticConfig:
    """Settings of one NQ-synthetic run (defaults follow the paper; the rest are documented choices)."""

    num_examples: int = 6000
    seed: int = 0
    pairs_per_call: int = 10
    temperature: float = 1.0
    max_tokens: int = 1024
    max_answer_words: int = 16
    max_calls: int | None = None  # None: num_examples (each call must yield one new pair on average)
    max_batch: int = 64  # calls sent per round at most

    def __post_init__(self):
        if self.num_examples < 1 or self.pairs_per_call < 1:
            raise ValueError("num_examples and pairs_per_call must be at least 1")


def call_request(seeds: list[QAPair], config: NQSyntheticConfig, call: int) -> tuple[dict, list[int]]:
    """The chat request of call number `call` and the indices of the seeds it shows."""
    rng = random.Random(f"nq_synthetic:{config.seed}:{call}")
    chosen = rng.sample(range(len(seeds)), SEEDS_PER_PROMPT)
    prompt = build_prompt([seeds[j] for j in chosen], config.pairs_per_call)
    request_seed = int.from_bytes(hashlib.sha256(f"{config.seed}:{call}".encode()).digest()[:4], "big") >> 1
    return ({"messages": [{"role": "user", "content": prompt}], "temperature": config.temperature,
             "max_tokens": config.max_tokens, "seed": request_seed}, chosen)


def generate(client, seeds: list[QAPair], config: NQSyntheticConfig,
             exclude: set[str] | frozenset[str] = frozenset(), progress: bool = True) -> tuple[list[dict], dict]:
    """Run NQ-synthetic against `client` (a ChatClient); returns (records, report).

    Generated questions are dropped when their normalised form repeats an earlier one, copies a
    seed, or appears in `exclude` (normalised evaluation questions). The report has counts of
    calls, failures, malformed pieces by reason and drops by reason; `report["short"]` is how many
    examples are missing when `max_calls` ran out first.
    """
    max_calls = config.max_calls if config.max_calls is not None else config.num_examples
    seed_questions = {normalize_question(s.question) for s in seeds}
    seen: set[str] = set()
    records: list[dict] = []
    report = {"calls": 0, "failed_calls": 0, "pairs_parsed": 0, "malformed": Counter(),
              "dropped": Counter(), "errors": Counter()}
    useful_calls, useful_pairs = 0, 0
    bar = tqdm(total=config.num_examples, unit="ex", desc="nq_synthetic", disable=not progress)
    while len(records) < config.num_examples and report["calls"] < max_calls:
        need = config.num_examples - len(records)
        if useful_calls:  # size the round by the yield seen so far, so the run does not overshoot much
            batch = math.ceil(need / max(useful_pairs / useful_calls, 0.5))
        else:  # a first round to measure the yield
            batch = min(math.ceil(need / config.pairs_per_call), getattr(client, "max_in_flight", 8))
        batch = max(1, min(batch, config.max_batch, max_calls - report["calls"]))
        first = report["calls"]
        calls = [call_request(seeds, config, first + k) for k in range(batch)]
        results = client.chat([request for request, _ in calls])
        report["calls"] += batch
        for k, ((_, chosen), result) in enumerate(zip(calls, results)):
            if result.error:
                report["failed_calls"] += 1
                report["errors"][result.error.split(":", 1)[0]] += 1
                continue
            pairs, malformed = parse_qa(result.texts[0], config.max_answer_words)
            report["pairs_parsed"] += len(pairs)
            report["malformed"].update(malformed)
            useful_calls += 1
            for pair in pairs:
                key = normalize_question(pair.question)
                reason = ("contaminated" if key in exclude else "copies_seed" if key in seed_questions
                          else "duplicate" if key in seen else None)
                if reason:
                    report["dropped"][reason] += 1
                    continue
                seen.add(key)
                useful_pairs += 1
                if len(records) < config.num_examples:
                    records.append(_record(pair, first + k, chosen, client.model))
                    bar.update(1)
    bar.close()
    report["examples"] = len(records)
    report["short"] = config.num_examples - len(records)
    for field in ("malformed", "dropped", "errors"):
        report[field] = dict(report[field])
    return records, report


def _record(pair: QAPair, call: int, chosen: list[int], model: str) -> dict:
    turns = [{"role": "user", "text": pair.question}, {"role": "assistant", "text": pair.answer}]
    return make_record(record_id(SOURCE, turns), SOURCE, turns, {"call": call, "seeds": chosen, "model": model})


def generate_to_file(client, out: str, config: NQSyntheticConfig, seeds_path: str | None = None,
                     exclude_path: str | None = None, progress: bool = True) -> dict:
    """Run NQ-synthetic and write `out` (JSONL records) and `out`.report.json atomically; returns the report."""
    seeds = load_seeds(seeds_path)
    exclude = load_eval_questions(exclude_path) if exclude_path else frozenset()
    records, report = generate(client, seeds, config, exclude, progress=progress)
    report.update(out=out, model=client.model, config=dataclasses.asdict(config), seeds=seeds_path or "shipped",
                  exclude_questions=exclude_path, exclude_size=len(exclude), client=client.stats())
    write_jsonl_atomic(out, records)
    write_json_atomic(out + ".report.json", report)
    return report
