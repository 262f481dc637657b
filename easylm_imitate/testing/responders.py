"""Ready-made responders for the OpenAI stub: echo, and NQ-synthetic-style QA pairs."""

from __future__ import annotations

import hashlib
import json
import random
import re

from easylm_imitate.testing.openai_stub import echo_responder

__all__ = ["echo_responder", "qa_responder"]

_WANTED = re.compile(r"Write (\d+) new question-answer pairs")
_SHOWN = re.compile(r"^Q: (.*)$", re.MULTILINE)
_THINGS = ("river", "novel", "band", "castle", "island", "treaty", "film", "comet", "opera", "bridge")


def qa_responder(entities: int = 5000, junk: bool = False):
    """A responder writing `Q:`/`A:` pairs like a target asked for NQ-synthetic data.

    The reply depends only on the request body (deterministic). Questions name one of `entities`
    made-up entities, so large runs see duplicates. With `junk`, each reply also carries a
    preamble, a question without an answer, a multi-line answer, a copy of a shown seed and a
    closing remark, so parsers and filters have something to do.
    """

    def respond(body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        match = _WANTED.search(prompt)
        wanted = int(match.group(1)) if match else 5
        rng = random.Random(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest())
        lines = ["Sure! Here are some new pairs:", ""] if junk else []
        for _ in range(wanted):
            e = rng.randrange(entities)
            thing = _THINGS[e % len(_THINGS)]
            lines += [f"Q: which country is the {thing} number {e} in?", f"A: Country {e % 97}"]
        if junk:
            shown = _SHOWN.findall(prompt)
            lines += ["Q: what is the tallest mountain on mars", "Q: who wrote the longest poem",
                      "A: Nobody knows for sure", "because it depends", ""]
            if shown:
                lines += [f"Q: {shown[0]}", "A: copied"]
            lines += ["", "I hope these help!"]
        return "\n".join(lines)

    return respond
