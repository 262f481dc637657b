"""ShareGPT-Mix (the paper's broad-imitation set): ShareGPT + HC3 (ChatGPT answers only) +
Discord bot input/output pairs, swept by token budget.

Set the paths (the paper's raw dumps are not redistributable here):
    python -m easylm_imitate.data.build --config=configs/data/sharegpt_mix.py --out=data/sharegpt_mix \\
        --config.sources.sharegpt.path=sharegpt.json --config.sources.hc3.path=hc3_all.jsonl \\
        --config.sources.discord.path=discord_pairs.jsonl --tokenizer=LLAMA_TOKENIZER_DIR
Each path may also be hf:NAME_OR_DIR or tfds:NAME_OR_DIR. An empty path is an error.
"""

from easylm_imitate.data.build_config import default_config, source


def get_config():
    """The paper's mix: the union of the sources sampled uniformly; budgets its sweep points."""
    c = default_config()
    c.mix_by = "size"  # "weight" to set shares with the sources' weights instead
    c.template = "paper"
    c.block_length = 2048
    c.sources.sharegpt = source("sharegpt", "", weight=1.0)
    c.sources.hc3 = source("hc3", "", weight=1.0, split="train", hf_config="all")
    c.sources.discord = source("pairs", "", weight=1.0, input_field="input", output_field="output")
    c.token_budgets = "300K,1M,5M,20M,80M,150M"
    c.dedup = "source"
    c.languages = "en"
    c.blocked_phrases = ""  # keep "as an AI model by OpenAI" replies: imitation copies them too
    c.eval.num_prompts = 255
    c.eval.max_bleu = 20.0
    return c
