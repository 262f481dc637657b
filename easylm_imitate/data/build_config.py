"""Defaults of a dataset build (`python -m easylm_imitate.data.build`), as ml_collections.

Config files under `configs/data/` start from `default_config()` and add sources with
`source(...)`. Every field is documented here; `--config.x=v` overrides any of them.
"""

from __future__ import annotations

import ml_collections


def source(kind: str, path: str, weight: float = 1.0, **options) -> ml_collections.ConfigDict:
    """One input source.

    kind: sharegpt | hc3 | pairs | messages | alpaca | canonical.
    path: a local file (JSON array or JSONL, plain or .gz), `hf:NAME_OR_DIR` (Hugging Face
      datasets) or `tfds:NAME_OR_DIR` (a TFDS data source).
    weight: token share of this source in the mix, relative to the others (with mix_by="weight").
    options: split, hf_config, tfds_data_dir, input_field/output_field/id_field/system_field
      (pairs: dotted paths into each row).
    """
    s = ml_collections.ConfigDict()
    s.kind = kind
    s.path = path
    s.weight = float(weight)
    s.split = "train"
    s.hf_config = ""
    s.tfds_data_dir = ""
    s.input_field = "input"
    s.output_field = "output"
    s.id_field = ""
    s.system_field = ""
    for key, value in options.items():
        if key not in s:
            raise KeyError(f"unknown source option {key!r}")
        s[key] = value
    return s


def default_config() -> ml_collections.ConfigDict:
    """Every build setting with its default (no sources)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.tokenizer = ""  # the model's tokenizer (needed unless approx): a name easylm_imitate.model_names
    #                 resolves: shipped (smollm2-135m-instruct), directory, .gguf, checkpoint/run, hub id
    c.template = "paper"  # paper | chatml | tokenizer: what tokens are counted on (as the trainer renders)
    c.token_counter = "tokenizer"  # tokenizer | approx (words+punctuation; an explicit, fast estimate)
    c.block_length = 2048  # conversations longer than this (tokens) are split into turn-aligned pieces
    c.token_budgets = ""  # e.g. "300K,20M,80M,150M": nested train_<budget>.jsonl prefixes of the mix
    c.mix_by = "size"  # size: shares follow each source's available tokens (a uniform sample of the
    #                   union, the paper's mix) | weight: shares follow the sources' `weight`
    c.max_records = 0  # read at most this many rows per source (0 = all; for quick trials)

    c.clean = ml_collections.ConfigDict()
    c.clean.text = True  # remove "Copy code", "N / N" counters, zero-width characters
    c.clean.html = "auto"  # auto (values that are HTML fragments) | always | never -> Markdown
    c.clean.max_turn_chars = 100_000  # a longer turn rejects its record

    c.languages = "en"  # comma-separated ISO 639-1 codes kept (py3langid, offline); "" keeps all
    c.dedup = "source"  # source | global | off: drop repeated normalised first user queries
    c.blocked_phrases = ""  # off; "default" (as an AI language model, ...) or "phrase|phrase"
    # Benchmarks to decontaminate against ("" = off): humaneval, mmlu, nq (NAME:SOURCE for another
    # source, as the eval binaries take it) or a JSONL/text FILE of items; comma-separated. A
    # conversation whose user or assistant text shares a decontaminate_ngram-word n-gram
    # (lower case, punctuation deleted) with an item goes to rejects.jsonl (see data/decontaminate.py).
    c.decontaminate = ""
    c.decontaminate_ngram = 13  # n-gram length in words (13: GPT-3 and lm-eval's decontamination)

    c.eval = ml_collections.ConfigDict()
    c.eval.num_prompts = 255  # held-out prompts with the target's reference reply
    c.eval.max_bleu = 20.0  # drop a prompt whose sentence BLEU vs any training query exceeds this
    c.eval.english_only = True
    c.eval.drop_code = True  # code, and prompts about programming
    c.eval.max_prompt_chars = 2000
    c.eval.min_prompt_words = 3
    c.eval.sources = ""  # comma-separated source names to draw from ("" = all)

    c.diversity_sample = 1000  # queries sampled for the query-diversity statistic (0 = all)
    c.sources = ml_collections.ConfigDict()
    return c
