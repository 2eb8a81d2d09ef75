"""What a user types, shown as text: control characters refused, Markdown quoted so nothing in it renders.

A reason (or a user name) reaches the approval dialog's Markdown body, the model's history and
the Models page. Two rules keep it inert:

- `control_character_problem` names the first control or format character (NUL, a bidi override
  such as U+202E, a zero-width joiner, a line break, ...) so the caller can refuse the text before
  anything is recorded; the ordinary space is the only whitespace allowed.
- `markdown_code` and `markdown_block` put text in a code span or a fenced code block whose fence
  is longer than any run of its own character in the text, so no emphasis, heading, link, image,
  autolink or HTML inside it is rendered: CommonMark shows code verbatim.
"""

from __future__ import annotations

import re
import unicodedata

#: Unicode categories refused in what a user types: controls (Cc: NUL, tab, line breaks, ...),
#: format characters (Cf: bidi overrides and isolates, zero-width characters), surrogates (Cs),
#: and the line and paragraph separators (Zl, Zp).
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def control_character_problem(field: str, text: str) -> str | None:
    """Returns why `text` is refused (naming the field, the character and where), or None when it is fine."""
    for position, char in enumerate(text):
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            name = unicodedata.name(char, "a control character")
            return (
                f"{field}: control character U+{ord(char):04X} ({name}) at position {position} is not "
                f"allowed; expected plain text on one line (letters, digits, punctuation and spaces)"
            )
    return None


def markdown_code(text: str) -> str:
    """Returns `text` as a Markdown code span: shown verbatim, on one line."""
    fence = "`" * (_longest_run(text, "`") + 1)
    # CommonMark strips one space on each side of a code span's content, so text that starts or
    # ends with a backtick (or a space) keeps it.
    return f"{fence} {text} {fence}"


def markdown_block(text: str) -> str:
    """Returns `text` as a fenced Markdown code block: shown verbatim, line breaks kept."""
    fence = "~" * max(3, _longest_run(text, "~") + 1)
    return f"{fence}text\n{text}\n{fence}"


def _longest_run(text: str, char: str) -> int:
    """Returns the length of the longest run of `char` in `text` (0 when there is none)."""
    return max((len(run) for run in re.findall(f"{re.escape(char)}+", text)), default=0)
