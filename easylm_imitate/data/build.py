"""Build an imitation dataset: read, clean, deduplicate, hold out, split and mix by tokens.

    python -m easylm_imitate.data.build --config=configs/data/sharegpt_mix.py --out=DIR
    python -m easylm_imitate.data.build --input=sharegpt:FILE --input=hc3:FILE --out=DIR \\
        --tokenizer=TOKENIZER_DIR --token_budgets=300K,20M --decontaminate=humaneval,mmlu,nq,items.jsonl

Writes train.jsonl (+ train_<BUDGET>.jsonl), eval_prompts.jsonl, rejects.jsonl and
report.json into --out and prints a summary; each stage shows a progress bar on stderr.
--decontaminate drops conversations sharing a 13-word n-gram with a benchmark item (to
rejects.jsonl, with the benchmark, item and n-gram; counts in report.json).
--tokenizer takes a shipped name (smollm2-135m-instruct), a directory, a .gguf file, a
checkpoint or run directory, or a hub id (see easylm_imitate/model_names.py). Bad input is
one `error: ...` line on stderr and exit status 1. Settings: easylm_imitate/data/build_config.py.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from easylm_imitate.cli_logging import quiet_logs_by_default
from easylm_imitate.data import building
from easylm_imitate.data import clean as clean_lib
from easylm_imitate.data import decontaminate
from easylm_imitate.data.build_config import default_config
from easylm_imitate.data.pipeline import Options, SourceSpec, parse_budgets
from easylm_imitate.data.progress import stderr_bars
from easylm_imitate.data.readers import KINDS, ReadOptions
from easylm_imitate.data.target_logprobs import TokenizerMismatch
from easylm_imitate.data.tokens import TokenCounter, load_tokenizer

KIND_ALIASES = {"discord": "pairs", "openai": "messages"}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Data build config file (configs/data/*.py).",
                                          lock_config=True)
flags.DEFINE_multi_string("input", [], "A source as kind:PATH (kind: sharegpt, hc3, pairs|discord, "
                          "messages|openai, alpaca, canonical; PATH: file, hf:NAME_OR_DIR or tfds:NAME_OR_DIR). "
                          "Repeatable; added to the config's sources.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_integer("seed", None, "Seed (overrides config.seed).")
flags.DEFINE_string("token_budgets", None, "Comma-separated token budgets, e.g. 300K,20M,150M.")
flags.DEFINE_string("tokenizer", None, "The model's tokenizer: shipped name (smollm2-135m-instruct), directory, "
                    ".gguf file, checkpoint/run directory, or hub id.")
flags.DEFINE_string("template", None, "Chat template tokens are counted on: paper | chatml | tokenizer.")
flags.DEFINE_enum("token_counter", None, ["tokenizer", "approx"], "approx: fast word-based estimate.")
flags.DEFINE_integer("eval_prompts", None, "Held-out eval prompts to draw (overrides config.eval.num_prompts).")
flags.DEFINE_integer("max_records", None, "Read at most this many rows per source (0 = all).")
flags.DEFINE_integer("block_length", None, "Split conversations longer than this many tokens.")
flags.DEFINE_string("languages", None, "Languages kept (comma-separated ISO codes; empty keeps all).")
flags.DEFINE_string("decontaminate", None, "Drop conversations sharing an n-gram with these benchmarks' items "
                    "(comma-separated): humaneval, mmlu, nq (or NAME:SOURCE, SOURCE as the eval binaries' "
                    "--data: a directory/file, hf:NAME), or a JSONL/text FILE of items.")
flags.DEFINE_integer("decontaminate_ngram", None, "N-gram length in words for --decontaminate (default 13).")
FLAGS = flags.FLAGS


def _apply_flags(config) -> None:
    """Top-level convenience flags override the config where given."""
    for name in ("seed", "token_budgets", "tokenizer", "template", "token_counter", "max_records",
                 "block_length", "languages", "decontaminate", "decontaminate_ngram"):
        if FLAGS[name].present:
            config[name] = FLAGS[name].value
    if FLAGS["eval_prompts"].present:
        config.eval.num_prompts = FLAGS.eval_prompts


def sources_from(config, inputs: list[str]) -> list[SourceSpec]:
    """Sources of the config (sorted by name) followed by those given as kind:PATH flags."""
    specs = []
    for name, s in config.sources.items():
        if not s.path:
            raise ValueError(f"source {name!r} has no path: set --config.sources.{name}.path=...")
        specs.append(SourceSpec(name, s.path, _read_options(s.kind, s, config), float(s.weight)))
    for text in inputs:
        kind, sep, path = text.partition(":")
        kind = KIND_ALIASES.get(kind, kind)
        if not sep or kind not in KINDS or not path:
            raise ValueError(f"--input={text!r}: expected kind:PATH with kind one of {', '.join(KINDS)}")
        name, n = kind, 2
        while any(s.name == name for s in specs):
            name, n = f"{kind}_{n}", n + 1
        specs.append(SourceSpec(name, path, _read_options(kind, None, config), 1.0))
    return specs


def _read_options(kind: str, s, config) -> ReadOptions:
    fields = {}
    if s is not None:
        fields = {k: s[k] for k in ("split", "hf_config", "tfds_data_dir", "input_field", "output_field",
                                    "id_field", "system_field")}
    return ReadOptions(kind=kind, max_items=int(config.max_records),
                       max_turn_chars=int(config.clean.max_turn_chars), **fields)


def options_from(config) -> Options:
    """Build options from a (resolved) config."""
    languages = tuple(x.strip() for x in str(config.languages).split(",") if x.strip())
    return Options(
        seed=int(config.seed), template=config.template, block_length=int(config.block_length),
        token_budgets=parse_budgets(config.token_budgets), clean_text=bool(config.clean.text),
        html=config.clean.html, languages=languages, dedup=config.dedup,
        blocked_phrases=clean_lib.parse_blocked_phrases(config.blocked_phrases),
        eval_num_prompts=int(config.eval.num_prompts), eval_max_bleu=float(config.eval.max_bleu),
        eval_english_only=bool(config.eval.english_only), eval_drop_code=bool(config.eval.drop_code),
        eval_max_prompt_chars=int(config.eval.max_prompt_chars),
        eval_min_prompt_words=int(config.eval.min_prompt_words),
        eval_sources=tuple(x.strip() for x in config.eval.sources.split(",") if x.strip()),
        diversity_sample=int(config.diversity_sample), mix_by=config.mix_by)


def counter_from(config) -> TokenCounter:
    """The token counter the config asks for (loads the tokenizer)."""
    if config.token_counter == "approx":
        return TokenCounter(config.template, None, approx=True)
    if not config.tokenizer:
        raise ValueError("token counts need the model's tokenizer: pass --tokenizer=NAME (a shipped name, "
                         "directory or .gguf file), or --token_counter=approx for a fast estimate")
    print(f"loading tokenizer {config.tokenizer}", file=sys.stderr, flush=True)
    return TokenCounter(config.template, load_tokenizer(config.tokenizer))


def main(argv) -> None:
    """Build the dataset the flags and config describe; bad input is one `error:` line, exit 1."""
    quiet_logs_by_default()
    try:
        if len(argv) > 1:
            raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
        if not FLAGS.out:
            raise ValueError("--out=DIR is required")
        config = _CONFIG.value if _CONFIG.value is not None else default_config()
        config = config.copy_and_resolve_references()
        with config.unlocked():
            _apply_flags(config)
        sources = sources_from(config, FLAGS.input)
        options = options_from(config)
        building.validate(sources, options)
        counter = counter_from(config)
        index = None
        if config.decontaminate:
            started = time.perf_counter()
            index = decontaminate.load_index(config.decontaminate, int(config.decontaminate_ngram),
                                             log=lambda m: print(m, flush=True))
            print(f"decontaminate: loaded in {time.perf_counter() - started:.1f}s", flush=True)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}".splitlines()[0]) from None
    try:
        report = building.build(sources, options, counter, FLAGS.out, log=lambda m: print(m, flush=True),
                                progress=stderr_bars, decontaminate=index)
    except TokenizerMismatch as e:  # the target's tokens are another tokenizer's: says which record and token
        raise SystemExit(f"error: {e}".splitlines()[0]) from None
    print()
    print(building.summary(report))
    timings = report.get("_timings_s", {})
    print(f"\nwrote {', '.join(report['outputs'])} to {os.path.abspath(FLAGS.out)} "
          f"in {sum(timings.values()):.1f}s (" + ", ".join(f"{k} {v}s" for k, v in timings.items()) + ")")
    sys.stdout.flush()


def run() -> None:
    """Console entry point (`easylm-build-data`)."""
    app.run(main)


if __name__ == "__main__":
    run()
