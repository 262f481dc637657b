"""Regenerate the smoke-test assets (conversations and a 512-token byte-level BPE tokenizer).

Run once by maintainers: `python -m easylm_imitate.assets.build_smoke_assets`. The output is
deterministic and committed, so nothing here runs at training time.
"""

from __future__ import annotations

import json
import os
import random

from easylm_imitate.assets import ASSET_DIR

FRUITS = {"banana": "yellow", "apple": "red", "lime": "green", "plum": "purple", "orange": "orange",
          "blueberry": "blue", "cherry": "red", "kiwi": "brown", "lemon": "yellow", "grape": "purple"}
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Egypt": "Cairo",
            "Peru": "Lima", "Kenya": "Nairobi", "Canada": "Ottawa", "Norway": "Oslo", "Chile": "Santiago"}
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def exchange(rng: random.Random) -> tuple[str, str]:
    """One user question and an assistant answer in a friendly, list-free style."""
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randrange(2, 50), rng.randrange(2, 50)
        return f"What is {a} plus {b}?", f"Sure! {a} plus {b} equals {a + b}."
    if kind == 1:
        fruit = rng.choice(sorted(FRUITS))
        return f"What color is a {fruit}?", f"A ripe {fruit} is usually {FRUITS[fruit]}."
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."


def conversations(n: int, seed: int, prefix: str) -> list[dict]:
    """`n` canonical records with one or two exchanges, some with a system prompt."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        turns = []
        if rng.random() < 0.2:
            turns.append({"role": "system", "text": "You are a helpful assistant."})
        for _ in range(1 + (rng.random() < 0.3)):
            q, a = exchange(rng)
            turns += [{"role": "user", "text": q}, {"role": "assistant", "text": a}]
        out.append({"id": f"{prefix}-{i}", "source": "smoke", "turns": turns, "meta": {}})
    return out


def build_tokenizer(texts: list[str], out_dir: str) -> None:
    """Train a byte-level BPE (vocab 512) and save it as a Hugging Face tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)


def main() -> None:
    """Write smoke_conversations*.jsonl and tiny_tokenizer/ into the assets directory."""
    train, evals = conversations(400, 1, "smoke"), conversations(40, 2, "smoke-eval")
    for name, records in (("smoke_conversations.jsonl", train), ("smoke_conversations_eval.jsonl", evals)):
        with open(os.path.join(ASSET_DIR, name), "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    texts = [t["text"] for r in train for t in r["turns"]] + ["BEGINNING OF CONVERSATION: USER: GPT:"] * 50
    build_tokenizer(texts, os.path.join(ASSET_DIR, "tiny_tokenizer"))


if __name__ == "__main__":
    main()
