"""Send prompts (or multi-turn prefixes) to the target and turn its replies into imitation records."""

from __future__ import annotations

import dataclasses
from collections import Counter

from easylm_imitate.data.schema import make_record
from easylm_imitate.imitation.client import MAX_TOP_LOGPROBS
from easylm_imitate.fileio import write_json_atomic, write_jsonl_atomic
from easylm_imitate.imitation.prompts import Prompt, read_prompts

SAMPLE_WITH = ("n", "seed")


@dataclasses.dataclass
class CollectConfig:
    """Decoding and sampling settings (None: the server's default)."""

    samples_per_prompt: int = 1
    sample_with: str = "n"  # "n": one request with n choices; "seed": one request per sample, seed = j
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    source: str | None = None  # default: "target:<model>"
    top_logprobs: int | None = None  # 0-20: ask for logprobs and keep them in meta["target_logprobs"]

    def __post_init__(self):
        if self.samples_per_prompt < 1:
            raise ValueError(f"samples_per_prompt must be at least 1, got {self.samples_per_prompt}")
        if self.sample_with not in SAMPLE_WITH:
            raise ValueError(f"sample_with must be one of {SAMPLE_WITH}, got {self.sample_with!r}")
        if self.top_logprobs is not None and not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs}")


def _messages(prompt: Prompt) -> list[dict]:
    return [{"role": t["role"], "content": t["text"]} for t in prompt.turns]


def build_requests(prompts: list[Prompt], config: CollectConfig) -> list[tuple[int, list[int], dict]]:
    """(prompt index, sample numbers it answers, chat request) for every request to send."""
    decoding = {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_tokens,
                "top_logprobs": config.top_logprobs}
    out = []
    for i, prompt in enumerate(prompts):
        base = {"messages": _messages(prompt), **decoding}
        if config.sample_with == "n" or config.samples_per_prompt == 1:
            out.append((i, list(range(config.samples_per_prompt)), dict(base, n=config.samples_per_prompt)))
        else:
            out.extend((i, [j], dict(base, seed=j)) for j in range(config.samples_per_prompt))
    return out


def collect(client, prompts: list[Prompt], config: CollectConfig) -> tuple[list[dict], list[dict], dict]:
    """Ask `client` (a ChatClient) for every prompt; returns (records, failures, report).

    Records follow prompt order then sample order; the id is the prompt's id, with `#j` appended
    when there are several samples. With `config.top_logprobs`, meta["target_logprobs"] has one
    entry per assistant turn in turn order: the reply's `choices[j].logprobs.content` list (see
    docs/imitation.md), None for assistant turns that came with the prompt. Each failure is {"id", "line", "error"} for a prompt sample
    the target did not answer (a rerun retries it); empty replies are skipped and counted.
    """
    source = config.source or f"target:{client.model}"
    plan = build_requests(prompts, config)
    results = client.chat([request for _, _, request in plan])
    records, failures = [], []
    report = {"prompts": len(prompts), "requests": len(plan), "records": 0, "empty_replies": 0,
              "failed_samples": 0, "finish_reasons": Counter()}
    for (i, samples, _), result in zip(plan, results):
        prompt = prompts[i]
        if result.error:
            report["failed_samples"] += len(samples)
            failures.extend({"id": prompt.id, "line": prompt.line, "sample": j, "error": result.error}
                            for j in samples)
            continue
        logprobs = result.logprobs or [None] * len(samples)
        for j, text, finish, lp in zip(samples, result.texts, result.finish_reasons or [None] * len(samples),
                                       logprobs):
            report["finish_reasons"][str(finish)] += 1
            if not text.strip():
                report["empty_replies"] += 1
                continue
            rid = prompt.id if config.samples_per_prompt == 1 else f"{prompt.id}#{j}"
            meta = dict(prompt.meta, prompt_id=prompt.id, sample=j, model=client.model, finish_reason=finish)
            if config.top_logprobs is not None:
                earlier = sum(t["role"] == "assistant" for t in prompt.turns)
                meta["target_logprobs"] = [None] * earlier + [lp]
            records.append(make_record(rid, source, prompt.turns + [{"role": "assistant", "text": text}], meta))
    report["records"] = len(records)
    report["finish_reasons"] = dict(report["finish_reasons"])
    return records, failures, report


def collect_to_file(client, prompts_path: str, out: str, config: CollectConfig, rejects_path: str | None = None) -> dict:
    """Collect replies for a prompts file; writes `out`, the rejects file and `out`.report.json atomically.

    rejects_path defaults to `out` + '.rejects.jsonl'. Returns the report (with the failures listed).
    """
    prompts, rejects = read_prompts(prompts_path)
    records, failures, report = collect(client, prompts, config)
    rejects_path = rejects_path or out + ".rejects.jsonl"
    report.update(out=out, model=client.model, config=dataclasses.asdict(config), prompts_file=prompts_path,
                  rejected_lines=len(rejects), rejects_file=rejects_path,
                  rejects_by_reason=dict(Counter(r["reason"].split(" (")[0] for r in rejects)),
                  failures=failures, client=client.stats())
    write_jsonl_atomic(out, records)
    write_jsonl_atomic(rejects_path, rejects)
    write_json_atomic(out + ".report.json", report)
    return report
