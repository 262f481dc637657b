"""Helpers for the data tests: a BPE tokenizer trained in-test (no hub), JSONL files."""

from __future__ import annotations

import json

CHATML_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                   "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "How do I boil an egg? Put the egg in boiling water for nine minutes.",
    "BEGINNING OF CONVERSATION: USER: hello GPT: hi there, how can I help you today?",
    "Write a short poem about the sea. The sea is wide and blue and deep.",
    "system user assistant You are a helpful assistant. Sure! Here are three tips.",
] * 20

# A two-turn conversation with a system prompt: the templates' and the inspector's fixture.
RECORD = {"id": "conv-1", "source": "t", "meta": {}, "turns": [
    {"role": "system", "text": "You are a helpful assistant."},
    {"role": "user", "text": "What is the capital of France?"},
    {"role": "assistant", "text": "The capital of France is Paris."},
    {"role": "user", "text": "How do I boil an egg?"},
    {"role": "assistant", "text": "Put the egg in boiling water for nine minutes."},
]}


def train_bpe(pre_tokenizer: str = "bytelevel", vocab_size: int = 400):
    """A BPE tokenizer trained on CORPUS, wrapped as a PreTrainedTokenizerFast with EOS/ChatML tokens.

    pre_tokenizer: "bytelevel" (GPT-2 style) or "metaspace" (sentencepiece style, "▁" word starts).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
    if pre_tokenizer == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        alphabet = sorted(set("".join(CORPUS) + "▁\n!?.,:'\"/<>|_-0123456789abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = CHATML_TEMPLATE
    return fast


def write_jsonl(path, rows) -> str:
    """Write rows (objects, or raw strings/bytes taken as-is) one per line; returns the path."""
    with open(path, "wb") as f:
        for row in rows:
            if isinstance(row, bytes):
                f.write(row + b"\n")
            elif isinstance(row, str):
                f.write(row.encode("utf-8") + b"\n")
            else:
                f.write(json.dumps(row).encode("utf-8") + b"\n")
    return str(path)


def read_jsonl(path) -> list:
    """Parsed lines of a JSONL file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


WORDS = ("time year people way day man thing woman life child world school state family student group country "
         "problem hand part place case week company system program question work government number night point "
         "home water room mother area money story fact month lot right study book eye job word business issue "
         "side kind head house service friend father power hour game line end member law car city community name "
         "president team minute idea kid body information back parent face others level office door health person "
         "art war history party result change morning reason research girl guy moment air teacher force education "
         "good new first last long great little own other old right big high different small large next early young "
         "important few public bad same able make know think take see come want look use find give tell work call "
         "try ask need feel become leave put mean keep let begin seem help talk turn start show hear play run move "
         "like live believe hold bring happen write provide sit stand lose pay meet include continue set learn").split()


def english(rng, lo=8, hi=30) -> str:
    """A sentence of common English words (py3langid reads it as English)."""
    n = rng.randint(lo, hi)
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + rng.choice([".", "?", "!"])


FRENCH = ["Bonjour, pouvez-vous m'expliquer comment faire une tarte aux pommes avec une pâte brisée maison ?",
          "Je voudrais savoir quelle est la meilleure façon d'apprendre une nouvelle langue rapidement."]
FRENCH_REPLY = ("Bien sûr ! Pour commencer, il faut préparer la pâte avec de la farine, du beurre et un peu d'eau "
                "froide, puis la laisser reposer au réfrigérateur pendant une heure avant de l'étaler.")


def sharegpt_rows(rng, n, prefix="s") -> list[dict]:
    """ShareGPT-format conversations (1-3 exchanges) with a few duplicates, French ones and errors."""
    rows = []
    for i in range(n):
        conv = []
        for _ in range(rng.randint(1, 3)):
            conv += [{"from": "human", "value": english(rng)},
                     {"from": "gpt", "value": " ".join(english(rng) for _ in range(rng.randint(1, 3)))}]
        rows.append({"id": f"{prefix}{i}", "conversations": conv})
    for k in range(0, n, 25):  # near-duplicates of earlier queries (for dedup and the BLEU filter)
        src = rows[k]["conversations"][0]["value"]
        rows.append({"id": f"{prefix}dup{k}", "conversations": [
            {"from": "human", "value": src}, {"from": "gpt", "value": english(rng)}]})
        rows.append({"id": f"{prefix}near{k}", "conversations": [
            {"from": "human", "value": src[:-1] + " today?"}, {"from": "gpt", "value": english(rng)}]})
    rows.append({"id": f"{prefix}fr0", "conversations": [{"from": "human", "value": FRENCH[0]},
                                                          {"from": "gpt", "value": FRENCH_REPLY}]})
    rows.append({"id": f"{prefix}err0", "conversations": [{"from": "human", "value": english(rng)},
                                                           {"from": "gpt", "value": "network error"}]})
    return rows


def hc3_rows(rng, n) -> list[dict]:
    """HC3-format rows with two ChatGPT answers each."""
    return [{"id": i, "question": english(rng), "human_answers": [english(rng)],
             "chatgpt_answers": [english(rng, 20, 40), english(rng, 20, 40)]} for i in range(n)]


def pairs_rows(rng, n) -> list[dict]:
    """Discord-style input/output pairs."""
    return [{"input": english(rng, 4, 12), "output": english(rng, 10, 30)} for i in range(n)]
