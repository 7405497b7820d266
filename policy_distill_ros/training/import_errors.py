"""The one error every teacher importer raises: a single line naming the file and what is wrong."""
from __future__ import annotations


class TeacherImportError(ValueError):
    """A checkpoint cannot be imported (or not exactly); the message names the file and the
    fault."""


def first_sentence(text: object, limit: int = 160) -> str:
    """A library's exception text cut to its first sentence (no advice, no multi-line dumps)."""
    text = " ".join(str(text).split())
    return (text.split(". ")[0] or text)[:limit]
