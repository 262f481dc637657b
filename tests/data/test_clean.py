"""Cleaning, filtering and splitting of conversations."""

from __future__ import annotations

import collections

import pytest

from easylm_imitate.data import clean


def U(text):
    return {"role": "user", "text": text}


def A(text):
    return {"role": "assistant", "text": text}


def test_sharegpt_html_becomes_markdown_without_escaped_underscores():
    html = ('<div class="markdown prose"><p>Use <code>my_var</code> and <strong>bold</strong>:</p>'
            '<ol><li>first_step</li><li>second</li></ol><pre><div><span>python</span><button>Copy code</button>'
            '</div><div><code class="language-python">x_1 = 1\nprint(x_1)\n</code></div></pre></div>')
    text = clean.clean_text(html)
    assert "<" not in text and "\\_" not in text and "Copy code" not in text
    assert "`my_var`" in text and "**bold**" in text and "1. first_step" in text
    assert "```python\nx_1 = 1\nprint(x_1)\n```" in text


def test_plain_text_that_mentions_html_is_left_alone():
    text = "Wrap it in a <div> like this:\n```html\n<div class=\"a\">hi</div>\n```"
    assert clean.clean_text(text) == text


def test_copy_code_and_counter_artifacts_are_removed():
    assert clean.clean_text("```pythonCopy code\nprint(1)\n```") == "```python\nprint(1)\n```"
    assert clean.clean_text("Here:\n\nyaml\nCopy code\nkey: value") == "Here:\n\nkey: value"
    assert clean.clean_text("1 / 1Write a poem about cats") == "Write a poem about cats"
    assert clean.clean_text("2 / 2\n\nTell me a joke") == "Tell me a joke"
    # Real text that looks similar stays.
    assert clean.clean_text("1 / 2 cup of sugar") == "1 / 2 cup of sugar"
    assert clean.clean_text("7/11/1980 was a Friday") == "7/11/1980 was a Friday"
    assert clean.clean_text("3 / 2Hello") == "3 / 2Hello"
    assert clean.clean_text("\u200b") == ""


def test_error_replies_are_recognised_only_as_whole_replies():
    assert clean.is_error_reply("Too many requests in 1 hour. Try again later.")
    assert clean.is_error_reply("An error occurred. If this issue persists please contact us through our help center.")
    assert clean.is_error_reply("network error")
    assert not clean.is_error_reply("Something went wrong in your code: the loop never ends. " * 10)
    assert not clean.is_error_reply("A network error can happen when the cable is unplugged; check it first.x" * 5)


def test_alternation_roles_and_failed_exchanges():
    events = collections.Counter()
    turns = [A("Hello! How can I help?"), {"role": "system", "text": "late system"},
             U("q1"), A("a1"), U("q2"), A("Too many requests in 1 hour. Try again later."),
             U("q3"), U("q3 more"), A(""), U("q4"), A("a4"), A("a4 continued"), U("dangling")]
    out = clean.clean_conversation(turns, events=events)
    assert out == [U("q1"), A("a1"), U("q4"), A("a4\n\na4 continued")]
    assert events["error_reply"] == 1 and events["empty_reply"] == 1
    assert events["leading_assistant_dropped"] == 1 and events["trailing_user_dropped"] == 1
    assert events["system_dropped"] == 1


def test_leading_system_turn_is_kept_and_empty_queries_go_with_their_reply():
    turns = [{"role": "system", "text": "Be brief."}, U("  "), A("orphan reply"), U("q"), A("a")]
    assert clean.clean_conversation(turns) == [{"role": "system", "text": "Be brief."}, U("q"), A("a")]


def test_conversation_with_nothing_left_is_dropped():
    with pytest.raises(clean.Dropped) as e:
        clean.clean_conversation([U("hello?"), A("network error")])
    assert e.value.code == "no_exchange"


def test_language_identification_is_offline_and_ignores_code():
    english = [U("How do I reverse a list in Python?"),
               A("You can call the reverse method, or slice it with a negative step:\n```python\nx[::-1]\n```")]
    french = [U("Comment faire cuire un oeuf dur ?"),
              A("Mettez l'oeuf dans l'eau bouillante pendant neuf minutes, puis refroidissez-le dans l'eau froide.")]
    assert clean.language_of(english) == "en"
    assert clean.language_of(french) == "fr"
    assert clean.language_of([U("hi"), A("```\nx = 1\n```")]) == "und"


def test_dedup_key_normalises_case_space_and_punctuation():
    assert clean.dedup_key([U("What is  the capital of France?")]) == clean.dedup_key([U("what is the capital of france")])
    assert clean.dedup_key([U("hello")]) != clean.dedup_key([U("hello world")])


def test_blocked_phrases_are_off_by_default_and_match_replies_only():
    turns = [U("As an AI language model, what do you think?"), A("As an AI language model, I think so.")]
    assert clean.parse_blocked_phrases("") == ()
    assert clean.blocked_phrase(turns, clean.parse_blocked_phrases("")) is None
    assert clean.blocked_phrase(turns, clean.parse_blocked_phrases("default")) == "as an ai language model"
    assert clean.blocked_phrase(turns[:1] + [A("Sure.")], clean.parse_blocked_phrases("default")) is None
    assert clean.parse_blocked_phrases("Foo| bar ") == ("foo", "bar")


def test_split_keeps_every_exchange_and_the_final_one():
    turns = [{"role": "system", "text": "s"}] + [t for i in range(6) for t in (U(f"q{i}"), A(f"a{i}"))]
    lengths = [3] + [10, 30] * 6
    pieces = clean.split_turns(turns, lengths, base=2, block_length=100)
    assert all(p[0] == 0 for p in pieces)  # system prompt repeated
    body = [i for p in pieces for i in p[1:]]
    assert body == list(range(1, 13))  # every exchange once, in order, final one included
    for p in pieces:
        assert 2 + sum(lengths[i] for i in p) <= 100
        assert turns[p[-1]]["role"] == "assistant"
    assert clean.split_turns(turns, lengths, base=2, block_length=10_000) == [list(range(13))]


def test_an_exchange_longer_than_a_block_is_a_piece_of_its_own():
    turns = [U("q0"), A("a0"), U("q1"), A("a1"), U("q2"), A("a2")]
    pieces = clean.split_turns(turns, [5, 5, 500, 500, 5, 5], base=0, block_length=100)
    assert pieces == [[0, 1], [2, 3], [4, 5]]


def test_code_prompts_are_recognised():
    assert clean.looks_like_code("Write a Python function that sorts a list")
    assert clean.looks_like_code("fix this:\nfor (i = 0; i < n; i++) {")
    assert not clean.looks_like_code("What are three tips for staying focused while studying?")
