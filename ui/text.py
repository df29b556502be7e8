"""Show user- and model-supplied text literally in Streamlit.

Streamlit renders Markdown in st.markdown, st.caption, st.write(str), st.title/header/subheader,
st.info/warning/error/success, widget labels, radio options, expander and status labels and metric
labels: with GFM (tables, autolinked URLs), LaTeX (`$x^2$`), emoji shortcodes (`:smile:`), colour
directives (`:red[x]`), Material icons (`:material/home:`) and typographic arrows (` -> `). A prompt
such as `![x](http://evil.example/a.png)` would make every viewer's browser fetch that URL, and
`**c** $x^2$` would show formatted. `literal(text)` is Markdown whose rendering is `text` itself.

How, measured against Streamlit 1.67 in Chromium: the characters that start Markdown syntax anywhere
(backslash, backtick, `* [ ] < > & $ | ~`, `_` at a word boundary, `:` before a name) are escaped, and so are
the few that matter only at the start of a line (`# + - =`, `1.` / `1)`); CommonMark shows an escaped
character as plain text. Other punctuation stays as typed, so messages stay readable in tests and logs.
Streamlit and remark-gfm then rewrite some patterns in the *decoded* text, where escapes no longer show:
emoji and icon shortcodes, autolinked URLs and e-mail addresses, and ` -> `-style arrows. Those places
get an invisible U+2060 WORD JOINER that breaks the pattern; the visible text is unchanged. Newlines
become hard line breaks; runs of blanks collapse, as in any HTML text.

Not for selectbox/multiselect options, st.text, st.code, st.dataframe, st.html(escaped) or plotly:
those show text as it is, and escapes would show.
"""

from __future__ import annotations

import re

WORD_JOINER = "\u2060"  # invisible, no width, not whitespace: splits a pattern without changing what shows

_ALWAYS = frozenset("\\`*[]<>&$|~")  # start code, emphasis, links, images, HTML, entities, math, tables
_LINE_START = re.compile(r"[#+\-=]|\d+[.)]")  # headings, list items, setext underlines, ordered lists

# Patterns that Streamlit 1.6x and remark-gfm rewrite in decoded text nodes, where escapes no longer show.
# `:smile:`, `:x:`, `:material_home:`, `:streamlit:`, and `:material/`, which Streamlit rewrites in the raw
# source before parsing.
_SHORTCODE = re.compile(r"(?<=:)(?=[\w+-]+:|material/)")
_ARROW = re.compile(r"(?:^|(?<=\s))(<->|->|<-|--|>=|<=|~=)(?=\s|$)")  # ` -> ` shows as an arrow
_AUTOLINK = re.compile(r"(?i)(?<=http)(?=s?:)|(?<=www)(?=\.)|(?<=@)(?=[-\w])")  # URLs, www., e-mail addresses


def _break_text_patterns(text: str) -> str:
    """`text` with a WORD JOINER inside each pattern that would be rewritten after the Markdown is parsed."""
    text = _SHORTCODE.sub(WORD_JOINER, text)
    text = _ARROW.sub(lambda m: m[1][0] + WORD_JOINER + m[1][1:], text)
    return _AUTOLINK.sub(WORD_JOINER, text)


def _escape_line(line: str) -> str:
    """One line of text (no newline, no leading blanks) with every character that would start syntax escaped."""
    out = []
    for i, ch in enumerate(line):
        before, after = line[i - 1 : i], line[i + 1 : i + 2]
        if (
            ch in _ALWAYS
            # `snake_case` is never emphasis; `_x_` is.
            or (ch == "_" and not (before.isalnum() and after.isalnum()))
            # `:name`, `::name` start directives (`:red[x]`, `:small[x]`); `a: b` and `12:30` do not.
            or (ch == ":" and (after == ":" or (after.isascii() and after.isalpha())))
        ):
            out.append("\\" + ch)
        else:
            out.append(ch)
    start = _LINE_START.match(line)
    if start and not out[start.end() - 1].startswith("\\"):
        out[start.end() - 1] = "\\" + out[start.end() - 1]
    return "".join(out)


def literal(text: str) -> str:
    """Markdown that Streamlit renders as exactly `text`: no formatting, links, images, HTML, math or emoji.

    For st.markdown / st.caption / st.write / st.title-header-subheader / st.info-style alerts / widget,
    button, expander, status, tab and metric labels, metric values / radio options / progress text. Embed
    it whole (`f"Model {literal(name)} is missing"`); escape each piece from a user, a workspace or a model.
    """
    text = _break_text_patterns(str(text).replace("\r\n", "\n").replace("\r", "\n"))
    # Leading blanks would make an indented code block (and show nothing anyway); a newline would join lines.
    return "  \n".join(_escape_line(line.lstrip(" \t")) for line in text.split("\n"))


def code(text: str) -> str:
    """Markdown for `text` as inline code (a path, a command), shown verbatim: for the same elements as literal().

    The fence is longer than any run of backticks in `text`; newlines become spaces (a code span is one line).
    """
    text = str(text).replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    text = text.replace(":material/", ":" + WORD_JOINER + "material/")  # Streamlit rewrites it even in code
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"  # CommonMark strips one blank each side, so a leading or trailing ` is safe
