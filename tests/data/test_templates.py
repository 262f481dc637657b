"""Chat templates: exact loss masks, generation prompts that match training, clear errors."""

from __future__ import annotations

import pytest
from data_helpers import RECORD

from easylm_imitate.data.templates import EmptyLossMask, TemplateError, get_template



def masked_runs(ids, mask, tokenizer) -> list[str]:
    """Decoded text of each maximal run of mask == 1."""
    runs, current = [], []
    for tid, m in zip(ids, mask):
        if m:
            current.append(tid)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


def test_paper_template_renders_the_authors_format(bpe_tokenizer):
    tok = bpe_tokenizer
    ids, mask = get_template("paper").render(RECORD, tok)
    assert tok.decode(ids) == (
        "BEGINNING OF CONVERSATION: You are a helpful assistant. USER: What is the capital of France? "
        "GPT: The capital of France is Paris.</s> USER: How do I boil an egg? "
        "GPT: Put the egg in boiling water for nine minutes.</s>")
    assert masked_runs(ids, mask, tok) == [" The capital of France is Paris.</s>",
                                           " Put the egg in boiling water for nine minutes.</s>"]
    assert ids.count(tok.eos_token_id) == 2
    assert all(m == 1 for tid, m in zip(ids, mask) if tid == tok.eos_token_id)


def test_chatml_mask_covers_assistant_text_and_im_end_only(bpe_tokenizer):
    tok = bpe_tokenizer
    ids, mask = get_template("chatml").render(RECORD, tok)
    assert tok.decode(ids) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n"
        "<|im_start|>user\nHow do I boil an egg?<|im_end|>\n"
        "<|im_start|>assistant\nPut the egg in boiling water for nine minutes.<|im_end|>\n")
    assert masked_runs(ids, mask, tok) == ["The capital of France is Paris.<|im_end|>",
                                           "Put the egg in boiling water for nine minutes.<|im_end|>"]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    # Five turns end in <|im_end|>; only the two assistant ones are learned.
    assert [m for tid, m in zip(ids, mask) if tid == end] == [0, 0, 1, 0, 1]


def test_tokenizer_template_follows_the_chat_template(bpe_tokenizer):
    tok = bpe_tokenizer
    ids, mask = get_template("tokenizer").render(RECORD, tok)
    expected = tok.apply_chat_template([{"role": t["role"], "content": t["text"]} for t in RECORD["turns"]],
                                       tokenize=False)
    assert tok.decode(ids) == expected
    assert masked_runs(ids, mask, tok) == ["The capital of France is Paris.<|im_end|>",
                                           "Put the egg in boiling water for nine minutes.<|im_end|>"]


def test_tokenizer_template_with_a_default_system_prompt(bpe_tokenizer):
    """A template that adds its own system turn (like SmolLM2's) is still prefix-stable."""
    import copy

    tok = copy.deepcopy(bpe_tokenizer)
    tok.chat_template = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
                         "<|im_start|>system\nDefault.<|im_end|>\n{% endif %}"
                         "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    record = {"id": "x", "turns": RECORD["turns"][1:3]}
    ids, mask = get_template("tokenizer").render(record, tok)
    assert tok.decode(ids).startswith("<|im_start|>system\nDefault.<|im_end|>\n<|im_start|>user\n")
    assert masked_runs(ids, mask, tok) == ["The capital of France is Paris.<|im_end|>"]


def test_tokenizer_template_that_rewrites_history_is_refused(bpe_tokenizer):
    import copy

    tok = copy.deepcopy(bpe_tokenizer)
    # Like "thinking" templates: only the last assistant turn is rendered in full.
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                         "{% if m['role'] == 'assistant' and not loop.last %}...{% else %}{{ m['content'] }}{% endif %}"
                         "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TemplateError, match=r"conv-1.*not prefix-stable"):
        get_template("tokenizer").render(RECORD, tok)


@pytest.mark.parametrize("name", ["paper", "chatml", "tokenizer"])
def test_prompt_is_the_training_prefix(name, bpe_tokenizer):
    """Generation sees exactly the tokens training saw before the reply."""
    template = get_template(name)
    ids, mask = template.render(RECORD, bpe_tokenizer)
    prompt = template.prompt(RECORD["turns"][:4], bpe_tokenizer)
    assert ids[:len(prompt)] == prompt
    assert mask[len(prompt)] == 1 and not any(mask[len(prompt) - 3:len(prompt)])
    first = template.prompt(RECORD["turns"][:2], bpe_tokenizer)
    assert ids[:len(first)] == first and mask[len(first)] == 1 and not any(mask[:len(first)])


@pytest.mark.parametrize("name", ["paper", "chatml", "tokenizer"])
def test_record_without_reply_is_an_empty_loss_mask_error(name, bpe_tokenizer):
    record = {"id": "lonely-7", "turns": [{"role": "user", "text": "anyone there?"}]}
    with pytest.raises(EmptyLossMask, match="lonely-7"):
        get_template(name).render(record, bpe_tokenizer)


@pytest.mark.parametrize("name", ["paper", "chatml"])
def test_control_tokens_typed_by_a_user_stay_text(name, bpe_tokenizer):
    tok = bpe_tokenizer
    record = {"id": "inj", "turns": [{"role": "user", "text": "say </s> and <|im_end|> please"},
                                     {"role": "assistant", "text": "ok"}]}
    ids, mask = get_template(name).render(record, tok)
    specials = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
    assert [tid for tid in ids if tid in specials] == [tok.eos_token_id if name == "paper"
                                                       else tok.convert_tokens_to_ids("<|im_end|>")] * (
        1 if name == "paper" else 2)
    assert "say </s> and <|im_end|> please" in tok.decode(ids)


def test_chatml_needs_the_chatml_tokens(metaspace_tokenizer):
    from transformers import PreTrainedTokenizerFast

    record = {"id": "c", "turns": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello"}]}
    tok = PreTrainedTokenizerFast(tokenizer_object=_without_chatml(metaspace_tokenizer), eos_token="</s>",
                                  unk_token="<unk>")
    with pytest.raises(TemplateError, match=r"<\|im_start\|>"):
        get_template("chatml").render(record, tok)
    ids, mask = get_template("paper").render(record, tok)  # the paper template needs only EOS
    assert sum(mask) > 0


def _without_chatml(tokenizer):
    """A copy of the backend tokenizer whose vocabulary lacks the ChatML tokens."""
    import json

    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if "im_" not in t["content"]]
    vocab = spec["model"]["vocab"]
    for name in ("<|im_start|>", "<|im_end|>"):
        vocab.pop(name, None)
    return Tokenizer.from_str(json.dumps(spec))


def test_sentencepiece_style_tokenizer_gets_no_doubled_word_starts(metaspace_tokenizer):
    tok = metaspace_tokenizer
    ids, mask = get_template("paper").render(RECORD, tok)
    pieces = tok.convert_ids_to_tokens(ids)
    assert "▁▁" not in "".join(pieces)
    assert [p for p in pieces if p.startswith("▁USER")][:1] == ["▁USER:"]
    assert masked_runs(ids, mask, tok)[0].strip() == "The capital of France is Paris.</s>"


def test_unknown_template_name():
    with pytest.raises(ValueError, match="unknown chat template 'vicuna'"):
        get_template("vicuna")


def test_render_batch_equals_render(bpe_tokenizer):
    records = [RECORD, {"id": "b", "turns": RECORD["turns"][1:3]}]
    for name in ("paper", "chatml", "tokenizer"):
        t = get_template(name)
        assert t.render_batch(records, bpe_tokenizer) == [t.render(r, bpe_tokenizer) for r in records]


def test_trainer_loader_uses_templates(tmp_path, bpe_tokenizer):
    """The training loader renders with these templates and rejects a no-reply record by line."""
    import json

    from easylm_imitate.data import train_loader

    path = tmp_path / "train.jsonl"
    lonely = {"id": "n", "source": "t", "turns": [{"role": "user", "text": "hi"}]}
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps(lonely) + "\n", encoding="utf-8")
    loaded = train_loader.render_file(str(path), bpe_tokenizer, get_template("chatml"), 64, 0, 0)
    assert loaded.stats.examples == 1 and loaded.stats.loss_tokens > 0
    assert [(r["line"], "'n'" in r["reason"]) for r in loaded.rejects] == [(2, True)]
