"""SSML input for espeak-ng: telling it from plain text, and refusing markup espeak-ng would mangle.

A text is SSML when, after leading whitespace, it starts with `<speak` (then a space, `>` or `/`), with a
prefixed `<prefix:speak`, or with what opens an XML document: a declaration or an XML processing instruction
(`<?xml`), a comment (`<!--`), a DOCTYPE. Nothing else is: "3 < 4", "<b>hi</b>" and "<?php" stay plain text,
read as written (in SSML mode espeak-ng would drop "< 4 ... >" as an unknown tag).

espeak-ng takes malformed markup without a word (an unclosed tag swallows what follows, "&" is spoken as
"and", an xml:lang it lacks falls back to the current voice, a tag or comment over 500 characters is read
out, a CDATA section is left unsaid), so the markup is checked here first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from xml.parsers import expat

from vivify.errors import VivifyError

__all__ = ["Checked", "check", "document"]

_START = re.compile(r"[\s\ufeff]*(<(?:(?:[A-Za-z_][\w.-]*:)?speak[\s/>]|\?xml|!--|!DOCTYPE[\s>]))")
# Markup in a well-formed document without CDATA (refused): comments, processing instructions and tags, whose
# quoted attribute values may hold ">".
_MARKUP = re.compile(r"<!--.*?-->|<\?.*?\?>|<(?:[^>\"']|\"[^\"]*\"|'[^']*')*>", re.DOTALL)
_LANG = "xml:lang"
# SSML's <break>: a time in seconds or milliseconds, or a strength. espeak-ng drops a break it cannot read
# (time="-5s", "5parsecs") without a word.
_BREAK_TIME = re.compile(r"\s*\d+(?:\.\d+)?(?:s|ms)\s*")
_BREAK_STRENGTHS = ("none", "x-weak", "weak", "medium", "strong", "x-strong")
# espeak-ng 1.51 reads out a tag, comment or processing instruction longer than about 503 characters.
_LONGEST_MARKUP = 500


def document(text: str) -> str | None:
    """The SSML document `text` holds, without the whitespace before it (XML allows none before `<?xml`), or
    None where `text` is plain text (see the module docstring)."""
    found = _START.match(text)
    return None if found is None else text[found.start(1):]


@dataclass(frozen=True)
class Checked:
    """What a checked SSML text says: its words with the markup gone and the entities resolved, and the
    languages its xml:lang attributes switch to."""

    spoken: str
    languages: tuple[str, ...]


def check(text: str, check_language: Callable[[str], object]) -> Checked:
    """Raise VivifyError, on one line, where `text` is not well-formed XML with a <speak> root, holds a CDATA
    section (espeak-ng leaves it unsaid), or names a language in xml:lang that `check_language` refuses (by
    raising VivifyError)."""
    root: list[str] = []
    open_elements: list[str] = []  # to name the element a mismatched or missing end tag leaves open
    languages: dict[str, None] = {}
    words: list[str] = []

    def start(name: str, attributes: dict[str, str]) -> None:
        root[:] = root or [name]
        open_elements.append(name)
        if _LANG in attributes:
            languages.setdefault(attributes[_LANG])
        if name == "break":
            _check_break(attributes)

    def end(name: str) -> None:
        open_elements.pop()

    def refuse_dtd(*_: object) -> None:
        # SSML needs no DTD, espeak-ng ignores one, and its entities could expand without bound.
        raise VivifyError("the SSML text has a DOCTYPE declaration: SSML needs none, leave it out")

    def refuse_cdata() -> None:
        raise VivifyError("the SSML text has a CDATA section, which espeak-ng does not say: write its text with "
                          "&amp; and &lt; instead")

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.StartCdataSectionHandler = refuse_cdata
    parser.CharacterDataHandler = words.append
    try:
        parser.Parse(text, True)
    except expat.ExpatError as error:
        raise VivifyError(f"the SSML text is not well-formed XML: {_problem(error, open_elements)}") from None
    if root != ["speak"]:
        raise VivifyError(f"the SSML text's root element is <{root[0]}>, not <speak>")
    for found in _MARKUP.finditer(text):
        if len(found[0]) > _LONGEST_MARKUP:
            line = text.count("\n", 0, found.start()) + 1
            column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
            raise VivifyError(f"the SSML text has markup longer than {_LONGEST_MARKUP} characters at line {line}, "
                              f"column {column}: espeak-ng would read it out")
    for language in languages:
        try:
            check_language(language)
        except VivifyError as error:
            raise VivifyError(f"xml:lang in the SSML text: {error}") from None
    return Checked("".join(words), tuple(languages))


def _check_break(attributes: dict[str, str]) -> None:
    time, strength = attributes.get("time"), attributes.get("strength")
    if time is not None and not _BREAK_TIME.fullmatch(time):
        raise VivifyError(f'the SSML text\'s <break time="{time}"> is not a time: write it as 500ms or 1.5s')
    if strength is not None and strength not in _BREAK_STRENGTHS:
        raise VivifyError(f'the SSML text\'s <break strength="{strength}"> is not one of {", ".join(_BREAK_STRENGTHS)}')


def _problem(error: expat.ExpatError, open_elements: list[str]) -> str:
    """What is wrong, where, in words plainer than expat's for the usual slips."""
    where = f"line {error.lineno}, column {error.offset + 1}"
    message = expat.errors.messages[error.code]
    if message == expat.errors.XML_ERROR_TAG_MISMATCH and open_elements:
        return f"<{open_elements[-1]}> is still open at the end tag at {where}"
    if message == expat.errors.XML_ERROR_NO_ELEMENTS and open_elements:
        return f"<{open_elements[-1]}> is not closed before the text ends"
    if message == expat.errors.XML_ERROR_JUNK_AFTER_DOC_ELEMENT:
        return f"text after the end of <speak> at {where}"
    if message == expat.errors.XML_ERROR_INVALID_TOKEN:
        return f"{message} at {where} (write & as &amp; and < as &lt;)"
    return f"{message} at {where}"
