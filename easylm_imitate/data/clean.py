"""Cleaning and filtering of canonical conversations.

Each function takes turns (`[{"role", "text"}]`) and either returns the cleaned turns or
raises `Dropped` with a short code and a readable reason. Order used by the build:
`clean_conversation` (text artifacts, error replies, alternation) -> `language_of` ->
`dedup_key` -> `blocked_phrase` -> `split_turns`.
"""

from __future__ import annotations

import collections
import functools
import re

DEFAULT_BLOCKED_PHRASES = (
    "as an ai language model", "as a language model", "as an ai model", "as an ai assistant",
    "i am an ai language model", "i'm an ai language model", "i'm sorry, but as an ai", "i am sorry, but as an ai",
    "trained by openai", "developed by openai", "created by openai", "openai's content policy",
    "my programming", "i am not able to browse the internet", "my knowledge cutoff",
)

ERROR_REPLIES = re.compile(
    r"^\W*(too many requests in 1 hour|an error occurred\. if this issue persists|network error"
    r"|something went wrong|hmm\.\.\.something seems to have gone wrong|there was an error generating a response"
    r"|only one message at a time|conversation not found|load failed|error in body stream"
    r"|you've reached our limit of messages|the message you submitted was too long"
    r"|our systems have detected unusual activity|error generating response|request timed out)",
    re.IGNORECASE)
ERROR_REPLY_MAX_CHARS = 300

_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_HTML_START = re.compile(r"\s*<(div|p|pre|ol|ul|table|h[1-6]|blockquote|span)[\s>]", re.IGNORECASE)
_HTML_END = re.compile(r"</(div|p|pre|ol|ul|table|h[1-6]|blockquote|span)>\s*$", re.IGNORECASE)
_FENCED_COPY = re.compile(r"```\s*(.*?)(?:Copy code)+(.+?)\s*?```", re.DOTALL)
_LOOSE_COPY = re.compile(r"(?m)^([A-Za-z][\w#+.\-]{0,19}\n)?[ \t]*Copy code[ \t]*\n?")
_COUNTER = re.compile(r"\A\s*(\d{1,2}) / (\d{1,2})(?=\S|[ \t]*\n|[ \t]*\Z)[ \t]*\n?")
_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_WORDS = re.compile(r"\w+")
_LETTERS = re.compile(r"[^\W\d_]")
_CODE_SYNTAX = re.compile(
    r"```|^\s*(def |class |import |from \S+ import |#include|public |private |function |const |let |var "
    r"|SELECT |INSERT |<\?php|<html|<div|<script)|[;{}]\s*$", re.MULTILINE)
_CODE_WORDS = re.compile(
    r"\b(code|coding|python|javascript|typescript|java|c\+\+|c#|golang|rust|sql|html|css|regex|bash|"
    r"powershell|script|program|function|compile|debug|api|json|yaml|react|django|flask|node\.?js|"
    r"excel formula|vba|algorithm)\b", re.IGNORECASE)


class Dropped(ValueError):
    """A conversation removed by a cleaning or filtering step; `code` is the drop category."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


# ---------------------------------------------------------------- text


def looks_like_html(text: str) -> bool:
    """True for a value that is an HTML fragment (starts and ends with a block element)."""
    return bool(_HTML_START.match(text)) and bool(_HTML_END.search(text))


def html_to_markdown(text: str) -> str:
    """HTML -> Markdown with `markdownify`, without escaping `_` and `*` (models would learn `\\_`)."""
    import markdownify

    return markdownify.markdownify(text, heading_style="ATX", bullets="-", escape_underscores=False,
                                   escape_asterisks=False, escape_misc=False)


def remove_copy_code(text: str) -> str:
    """Drop the "Copy code" button text that scraped code blocks carry (keep the language)."""
    if "Copy code" not in text:
        return text
    text = _FENCED_COPY.sub(lambda m: f"```{m.group(1).strip()}\n{m.group(2).strip(chr(10))}\n```", text)
    return _LOOSE_COPY.sub("", text)


def remove_counter(text: str) -> str:
    """Drop a leading "N / M" regeneration counter (e.g. "1 / 1Write a poem"), N <= M."""
    match = _COUNTER.match(text)
    if match and 1 <= int(match.group(1)) <= int(match.group(2)):
        return text[match.end():]
    return text


def clean_text(text: str, html: str = "auto") -> str:
    """A turn's text without HTML, scraping artifacts, zero-width characters and outer space."""
    if html == "always" or (html == "auto" and looks_like_html(text)):
        text = html_to_markdown(text)
    text = remove_counter(remove_copy_code(text))
    if "\u200b" in text or "\ufeff" in text or "\u200c" in text or "\u200d" in text or "\u2060" in text:
        text = _ZERO_WIDTH.sub("", text)
    return text.strip()


def is_error_reply(text: str) -> bool:
    """True for a rate-limit or service error message in place of a reply."""
    return len(text) <= ERROR_REPLY_MAX_CHARS and bool(ERROR_REPLIES.match(text))


# ---------------------------------------------------------------- conversations


def clean_conversation(turns: list[dict], html: str = "auto", clean: bool = True,
                       events: collections.Counter | None = None) -> list[dict]:
    """Clean texts, drop failed exchanges, and enforce `[system] (user assistant)+`.

    An exchange whose reply is empty or a service error is removed with its query; an empty
    query is removed with its reply. Consecutive turns of one role are joined; system turns
    after the first exchange are dropped; a leading assistant turn and a trailing user turn
    are dropped. `events` counts what happened. Dropped if no exchange is left.
    """
    events = events if events is not None else collections.Counter()
    kept: list[dict] = []
    for turn in turns:
        text = clean_text(turn["text"], html) if clean else turn["text"]
        if text is not turn["text"]:
            events["text_cleaned"] += 1
        role = turn["role"]
        if role == "assistant" and (not text or is_error_reply(text)):
            events["empty_reply" if not text else "error_reply"] += 1
            if kept and kept[-1]["role"] == "user":
                kept.pop()
            continue
        if role == "system" and (not text or any(t["role"] != "system" for t in kept)):
            events["system_dropped"] += 1
            continue
        if kept and kept[-1]["role"] == role:  # join consecutive turns of one role
            events["turns_merged"] += 1
            prev = kept[-1]["text"]
            kept[-1] = {"role": role, "text": f"{prev}\n\n{text}" if prev and text else prev or text}
            continue
        kept.append({"role": role, "text": text})
    systems = [t for t in kept if t["role"] == "system"]
    body = [t for t in kept if t["role"] != "system"]
    # Exchanges with an empty query go as a whole (alternation is kept).
    cleaned: list[dict] = []
    i = 0
    while i < len(body):
        if body[i]["role"] == "user" and not body[i]["text"]:
            events["empty_query"] += 1
            i += 2
            continue
        cleaned.append(body[i])
        i += 1
    if cleaned and cleaned[0]["role"] == "assistant":
        events["leading_assistant_dropped"] += 1
        cleaned.pop(0)
    if cleaned and cleaned[-1]["role"] == "user":
        events["trailing_user_dropped"] += 1
        cleaned.pop()
    if not cleaned:
        raise Dropped("no_exchange", "no complete user/assistant exchange after cleaning")
    return systems + cleaned


def strip_code(text: str) -> str:
    """Text without fenced and inline code (for language identification)."""
    return _INLINE_CODE.sub(" ", _CODE_BLOCK.sub(" ", text))


@functools.lru_cache(maxsize=1)
def _language_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=False)


def language_of_text(text: str, max_chars: int = 600, min_letters: int = 20) -> str:
    """ISO 639-1 code from py3langid's offline model; "und" when there is too little text."""
    text = strip_code(text[: max_chars * 4])[:max_chars]
    if len(_LETTERS.findall(text)) < min_letters:
        return "und"
    return _language_identifier().classify(text)[0]


def language_of(turns: list[dict], max_chars: int = 600) -> str:
    """Language of a conversation, judged on its text (code removed), first `max_chars`."""
    parts, size = [], 0
    for turn in turns:
        if turn["role"] == "system":
            continue
        parts.append(turn["text"][: max_chars * 4])
        size += len(parts[-1])
        if size >= max_chars * 4:
            break
    return language_of_text("\n".join(parts), max_chars)


def normalize_query(text: str) -> str:
    """Case- and punctuation-insensitive form of a query (for deduplication)."""
    words = _WORDS.findall(text.casefold())
    return " ".join(words) if words else " ".join(text.casefold().split())


def first_query(turns: list[dict]) -> str:
    """The first user turn's text ("" if none)."""
    return next((t["text"] for t in turns if t["role"] == "user"), "")


def dedup_key(turns: list[dict]) -> str:
    """Deduplication key: the normalised first user query."""
    return normalize_query(first_query(turns))


def blocked_phrase(turns: list[dict], phrases: tuple[str, ...]) -> str | None:
    """The first blocked phrase found (case-insensitive) in an assistant turn, or None."""
    if not phrases:
        return None
    for turn in turns:
        if turn["role"] == "assistant":
            low = turn["text"].casefold()
            for phrase in phrases:
                if phrase in low:
                    return phrase
    return None


def parse_blocked_phrases(spec: str) -> tuple[str, ...]:
    """"" = off, "default" = DEFAULT_BLOCKED_PHRASES, else phrases separated by "|"."""
    spec = (spec or "").strip()
    if not spec:
        return ()
    if spec == "default":
        return DEFAULT_BLOCKED_PHRASES
    return tuple(p.strip().casefold() for p in spec.split("|") if p.strip())


def split_turns(turns: list[dict], lengths: list[int], base: int, block_length: int) -> list[list[int]]:
    """Turn indices of each piece of a conversation cut to `block_length` tokens.

    Pieces hold whole exchanges (user + assistant) and repeat the leading system turn; an
    exchange longer than a block is a piece on its own; every exchange, the final one
    included, is in exactly one piece. `base` is the template's fixed cost per record.
    """
    systems = [i for i, t in enumerate(turns) if t["role"] == "system"]
    body = [i for i, t in enumerate(turns) if t["role"] != "system"]
    if not block_length or base + sum(lengths) <= block_length:
        return [list(range(len(turns)))]
    exchanges, current = [], []
    for i in body:
        current.append(i)
        if turns[i]["role"] == "assistant":
            exchanges.append(current)
            current = []
    if current:
        exchanges[-1:] = [exchanges[-1] + current] if exchanges else [current]
    fixed = base + sum(lengths[i] for i in systems)
    pieces, piece, size = [], [], fixed
    for exchange in exchanges:
        cost = sum(lengths[i] for i in exchange)
        if piece and size + cost > block_length:
            pieces.append(systems + piece)
            piece, size = [], fixed
        piece += exchange
        size += cost
    pieces.append(systems + piece)
    return pieces


def looks_like_code(text: str) -> bool:
    """True for a prompt with code, or one about programming (raters cannot judge those)."""
    return bool(_CODE_SYNTAX.search(text)) or bool(_CODE_WORDS.search(text))
