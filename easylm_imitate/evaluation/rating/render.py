"""Model output (untrusted) as safe HTML: Markdown with raw HTML and images disabled.

markdown-it-py escapes every raw HTML tag and attribute as text (html=False); links are kept
only for http, https and mailto URLs and open with rel="nofollow noopener noreferrer";
images are not rendered (a rater's browser never fetches anything a model wrote).
"""

from __future__ import annotations

import functools
import re

from markdown_it import MarkdownIt

_SAFE_URL = re.compile(r"^(https?:|mailto:)", re.IGNORECASE)


def _link_open(self, tokens, idx, options, env):
    tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
    return self.renderToken(tokens, idx, options, env)


@functools.lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("js-default", {"html": False, "linkify": False, "breaks": True, "typographer": False})
    md.disable("image")
    md.validateLink = lambda url: bool(_SAFE_URL.match(url.strip()))
    md.add_render_rule("link_open", _link_open)
    return md


def markdown_to_safe_html(text: str) -> str:
    """Render untrusted Markdown `text` to HTML that carries no script, handler or foreign fetch."""
    return _parser().render(text)
