"""Which text the platform accepts, and how stored text is always made serialisable.

Python strings may hold lone UTF-16 surrogates (``json.loads('"\\ud800"')`` makes one) and NUL
characters. Neither can be encoded as UTF-8, so a response carrying one fails to serialise (a
500 for everyone who can see the value), and PostgreSQL refuses NUL in text and JSONB. So:

* at the door, every caller-supplied string (metadata keys and values, group names, filenames,
  questions, any JSON body) is checked with :func:`text_problem` and refused with a 400;
* on the way out, :func:`scrub` replaces what may already be stored (rows written before this
  check, a bug elsewhere) with U+FFFD, so one bad value can never break a listing for others.

Pure functions, standard library only: every layer may use them.
"""

from __future__ import annotations

import re
from typing import Any

# One lone surrogate or NUL anywhere in a str.
_BAD_CHAR = re.compile("[\ud800-\udfff\x00]")
# A JSON \\u escape of a surrogate that does not form a valid pair, or of NUL. The lookbehind
# counts backslashes so that an escaped backslash followed by "ud800" (the six literal
# characters) is not taken for an escape.
_JSON_BAD_ESCAPE = re.compile(
    rb"(?<!\\)(?:\\\\)*\\u(?:"
    rb"[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"  # high without low
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u)"  # (a low after a high is fine)
    rb"[dD][c-fC-F][0-9a-fA-F]{2}"  # low without high
    rb"|0000)"
)


class InvalidText(ValueError):
    """A caller-supplied string that cannot be stored and served safely."""


def text_problem(text: str) -> str | None:
    """Why ``text`` is refused, or None when it is fine."""
    match = _BAD_CHAR.search(text)
    if match is None:
        return None
    ch = match.group()
    if ch == "\x00":
        return "a NUL character"
    return f"a lone UTF-16 surrogate (U+{ord(ch):04X}), which is not valid Unicode"


def check_text(value: Any, where: str) -> None:
    """Raise :class:`InvalidText` when any string in ``value`` (a str, or dict keys/values and
    list items, recursively) has a :func:`text_problem`."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise InvalidText(f"{where} contains {problem}")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"{where} (a key)")
            check_text(item, f"{where}[{key!r}]" if text_problem(str(key)) is None else where)
    elif isinstance(value, list | tuple):
        for item in value:
            check_text(item, where)


def scrub(value: Any) -> Any:
    """``value`` with every lone surrogate and NUL replaced by U+FFFD, recursively through
    dicts (keys too) and lists. Cheap when there is nothing to replace."""
    if isinstance(value, str):
        return _BAD_CHAR.sub("\ufffd", value) if _BAD_CHAR.search(value) else value
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, tuple):
        return tuple(scrub(v) for v in value)
    return value


def json_body_problem(raw: bytes) -> str | None:
    """Why a JSON request body is refused before it is parsed: bytes that are not UTF-8 (the
    JSON parser would let encoded surrogates through), or a \\u escape of a lone surrogate or of
    NUL. None when fine; the body's JSON syntax is left to the parser."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the body is not valid UTF-8 (byte {exc.start})"
    match = _JSON_BAD_ESCAPE.search(raw)
    if match is not None:
        escape = match.group().lstrip(b"\\").decode("ascii")
        what = "NUL" if escape.endswith("0000") else "a lone UTF-16 surrogate"
        return f"the body contains \\{escape} ({what}), which is not valid Unicode text"
    return None
