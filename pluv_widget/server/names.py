"""Display names as identities: what a name may be, and when two names are the same person.

:func:`normalize_name` turns what a student typed into the name shown (NFKC, trimmed, inner
whitespace collapsed) or refuses it with :class:`BadNameError`: control characters, format
characters (bidi controls such as U+202E, zero-width ones such as U+200B), invisible fillers,
private-use and unassigned code points, and anything outside 1-40 characters.

:func:`name_key` is the name's *skeleton* (Unicode TS #39, case-insensitive): two names with the
same key look alike and are one identity, so "Ada", "ada", "ＡＤＡ" and "Аda" (Cyrillic А) cannot
sit side by side. The table is the ``confusable-homoglyphs`` package's ``confusables.json``
(the Unicode consortium's confusables, as homoglyph groups): its single-character groups, plus
each ASCII letter with its other case, are merged once into equivalence classes and every
character maps to one representative (ASCII when the class has one). The classes are transitive,
so they are a little stricter than TS #39's one-way mapping ("l", "I", "1" and "|" are one
letter): a false "taken" is a teacher's click away (release the name), a look-alike impostor is
not.
"""

from __future__ import annotations

import functools
import json
import string
import unicodedata
from importlib import resources

from ..errors import PluvError

#: The longest name, in characters, after normalisation.
MAX_NAME_CHARS = 40
#: General categories refused anywhere in a name: controls, format characters (bidi controls,
#: zero-width spaces and joiners, soft hyphen), surrogates, private use, unassigned, line and
#: paragraph separators.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: Characters that draw nothing but are letters or marks to Unicode (Hangul fillers, Braille
#: blank, the Mongolian vowel separator, variation selectors, the combining grapheme joiner).
INVISIBLE = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u2800\u3164\uffa0"
    + "".join(chr(code) for code in range(0xFE00, 0xFE10))
)


class BadNameError(PluvError, ValueError):
    """A display name that cannot be an identity; the message says why (the route answers 400)."""


def normalize_name(raw: str) -> str:
    """The name as shown: NFKC, trimmed, runs of whitespace made one space; else :class:`BadNameError`."""
    if not isinstance(raw, str):
        raise BadNameError("a name is text")
    for char in raw:
        if unicodedata.category(char) in REFUSED_CATEGORIES or char in INVISIBLE:
            raise BadNameError(
                f"a name may not contain control, bidi or invisible characters (found U+{ord(char):04X})")
    name = " ".join(unicodedata.normalize("NFKC", raw).split())
    for char in name:  # NFKC may produce what it was not given
        if unicodedata.category(char) in REFUSED_CATEGORIES or char in INVISIBLE:
            raise BadNameError(f"a name may not contain U+{ord(char):04X}")
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise BadNameError(f"a name has 1-{MAX_NAME_CHARS} characters (not counting spaces around it)")
    return name


def name_key(name: str) -> str:
    """The identity a (normalised) name stands for: its case-insensitive confusable skeleton."""
    table = _representatives()
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return "".join(table.get(char, char) for char in folded)


@functools.cache
def _representatives() -> dict[str, str]:
    """Each confusable character → its class's representative, built once from the table."""
    raw = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text(encoding="utf-8")
    groups: dict[str, list[dict[str, str]]] = json.loads(raw)
    parent: dict[str, str] = {}

    def find(char: str) -> str:
        root = char
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while char != root:  # path compression
            parent[char], char = root, parent[char]
        return root

    def union(first: str, second: str) -> None:
        a, b = find(first), find(second)
        if a != b:
            parent[a] = b

    for char, homoglyphs in groups.items():
        for homoglyph in homoglyphs:
            other = homoglyph.get("c", "")
            if len(char) == 1 and len(other) == 1:  # sequences ("rn" for "m") are not classes
                union(char, other)
    for letter in string.ascii_lowercase:
        union(letter, letter.upper())
    classes: dict[str, list[str]] = {}
    for char in parent:
        classes.setdefault(find(char), []).append(char)
    table: dict[str, str] = {}
    for members in classes.values():
        chosen = min(members, key=lambda char: (not char.isascii(), not char.islower(), ord(char)))
        for char in members:
            table[char] = chosen
    return table
