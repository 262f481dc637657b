"""Untrusted Markdown renders readably and safely: no raw HTML, no script links, no images."""

import re

import pytest

from easylm_imitate.evaluation.rating.render import markdown_to_safe_html


def test_readable_markdown_subset():
    html = markdown_to_safe_html("Intro\nnext line\n\n- **bold** item\n- two\n\n```\nx = '<b>'\n```")
    assert "<ul>" in html and "<strong>bold</strong>" in html and "<br>" in html
    assert "<pre><code>x = '&lt;b&gt;'\n</code></pre>" in html


@pytest.mark.parametrize("text", [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](  javascript:alert(1))",
    "[x](java\tscript:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox)",
    "<javascript:alert(1)>",
    "![pixel](https://tracker.example/p.png)",
    '<a href="javascript:alert(1)">x</a>',
    "<svg onload=alert(1)>",
])
def test_hostile_input_leaves_no_tag_handler_or_script_url(text):
    html = markdown_to_safe_html(text)
    tags = re.findall(r"<([a-z]+)", html)
    assert set(tags) <= {"p", "a", "br"}, html
    assert not re.search(r"<[^>]*\son[a-z]+=", html), html
    for href in re.findall(r'href="([^"]*)"', html):
        assert href.startswith(("http://", "https://", "mailto:")), html
    assert "<img" not in html


def test_web_links_are_kept_without_referrer():
    html = markdown_to_safe_html("[docs](https://example.org/a?b=1)")
    assert '<a href="https://example.org/a?b=1" rel="nofollow noopener noreferrer">docs</a>' in html
