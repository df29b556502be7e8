"""Hostile strings for the tests that show user and model text literally (ui.text.literal): each would be
formatted, linked, fetched or rewritten by Streamlit's Markdown if it were not escaped."""

from __future__ import annotations

EVIL_PROMPT = "![x](http://evil.example/a.png) **c** _bold_ $x^2$"

HOSTILE = [
    EVIL_PROMPT,
    "[link](http://evil.example/l) <http://evil.example/auto> <b>bold</b> <img src=x onerror=alert(1)>",
    "&amp; &lt;tag&gt; &#65; &copy; \\*not\\* \\\\ back\\slash\\",
    "`code` ``two`` ```fence``` ~~strike~~ ~one~ *it* __dunder__ snake_case_name _x_",
    "$$\\int_0^1 x\\,dx$$ and $5 or $10 and \\$ and \\(x\\)",
    ":smile: :+1: :red[red] :blue-background[bg] :small[s] :material/home: :material_home: :streamlit: ::leaf",
    "12:30:45 resid:blocks.1.hook_resid_pre a: b x:y",
    "a -> b <- c <-> d -- e >= f <= g ~= h",
    "www.evil.example http://evil.example/x https://evil.example/y mail@evil.example",
    "# heading\n## two\n> quote\n- item\n+ plus\n* star\n1. one\n2) two\n---\n===\n***\n___",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "line one\nline two\n\nparagraph\n    indented code\n\ttab",
    "[ref]: http://evil.example/ref\n[ref] [^1]\n\n[^1]: note",
    "ends with a colon:",
    "openai/gpt-4o-mini",
    "anthropic/claude-3-5-sonnet-20241022",
    "C:\\Users\\me\\ws.duckdb and /tmp/_private/ws.duckdb",
    "emoji 😀 and CJK 漢字 and RTL שלום and nbsp\u00a0here",
    "",
]


def shown(markdown: str) -> str:
    """The text that Markdown made by ui.text.literal displays: backslash escapes and word joiners removed,
    hard line breaks back to newlines (AppTest reports an element's Markdown source, not what it displays)."""
    import re

    text = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown.replace("  \n", "\n"))
    return text.replace("\u2060", "")


def rendered(markdown: str) -> tuple[str, set[str]]:
    """What CommonMark (with GFM tables and strikethrough, as Streamlit) makes of `markdown`: its text
    (word joiners removed, blanks collapsed) and the set of HTML tags it produced."""
    import html
    import re

    from markdown_it import MarkdownIt

    out = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)
    tags = set(re.findall(r"<([a-z][a-z0-9]*)", out))
    text = html.unescape(re.sub(r"<[^>]*>", " ", out)).replace("\u2060", "")
    return " ".join(text.split()), tags


def collapse(text: str) -> str:
    """`text` with blanks collapsed, as HTML shows it."""
    return " ".join(text.split())
