"""Reading JSON and YAML inputs and checking paths, with errors that name the file.

The reading itself is models/textio.py's, shared with the model readers so that every input
is refused the same way (not UTF-8, too large, nested too deep, YAML aliases), in one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from models import textio
from models.errors import SpecError

from .errors import InvalidInputError

__all__ = ["MAX_NAME_BYTES", "MAX_PATH_BYTES", "check_name", "check_output_path",
           "display_path", "plain", "read_json", "read_yaml", "shorten", "write_text_whole"]

MAX_NAME_BYTES = 255
"""Longest file name (one path component) the file systems cachepart runs on accept."""
MAX_PATH_BYTES = 4095
"""Longest path, less its terminating NUL (Linux PATH_MAX)."""

shorten = textio.shorten
"""``repr(value)`` cut to 60 characters with '...': how a message quotes an input value."""
plain = textio.plain
"""A name (a field, a key) as given when short and printable, else quoted and cut."""
display_path = textio.display_path
"""A path as a message shows it: as given when short and printable, else quoted and cut."""


def read_json(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Parse a JSON file; errors name the file, and the line for a syntax error. Refused in
    one line: a file that is not UTF-8 text, over 64 MiB or nested over 200 levels."""
    try:
        return textio.load_json(path, what)
    except SpecError as exc:
        raise InvalidInputError(str(exc)) from None


def read_yaml(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Parse a YAML file with the safe loader; errors name the file and the line. Refused in
    one line: not UTF-8 text, over 1 MiB, nested over 200 levels, or any anchor or alias."""
    try:
        return textio.load_yaml(path, what)
    except SpecError as exc:
        raise InvalidInputError(str(exc)) from None


def write_text_whole(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place, so an
    interrupt leaves the old file or the new one, never half of one. OSError as open() would
    raise it; a path that is not a regular file (/dev/stdout) is written directly."""
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file():
        target.write_text(text, encoding="utf-8")
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def check_name(text: str, field: str) -> str:
    """``text`` if it can name a file or a built-in entry; else InvalidInputError naming
    ``field``: a NUL character, a path component over 255 bytes or a path over 4,095 (which
    the OS would refuse with an OSError, or a zoo lookup with a 5,000-character line)."""
    if "\x00" in text:
        raise InvalidInputError(f"{shorten(text)} contains a NUL character", field=field)
    size = len(text.encode("utf-8", "replace"))
    parts = text.replace(os.altsep, os.sep).split(os.sep) if os.altsep else text.split(os.sep)
    longest = max(len(part.encode("utf-8", "replace")) for part in parts)
    if longest > MAX_NAME_BYTES:
        raise InvalidInputError(f"{shorten(text)} has a name of {longest:,} bytes, longer than "
                                f"the {MAX_NAME_BYTES} a file or model name may have", field=field)
    if size > MAX_PATH_BYTES:
        raise InvalidInputError(f"{shorten(text)} is a path of {size:,} bytes, longer than the "
                                f"{MAX_PATH_BYTES:,} a path may have", field=field)
    return text


def check_output_path(path: str, field: str) -> None:
    """Refuse an output file that cannot be written (a folder, a missing or read-only folder)
    before any work is done: InvalidInputError naming ``field`` and the path. Creates nothing."""
    if not path:
        raise InvalidInputError("expected a file path, got ''", field=field)
    check_name(path, field)
    p = Path(path)
    reason = None
    if p.is_dir():
        reason = "is a directory"
    elif not p.parent.is_dir():
        reason = f"no directory {str(p.parent)!r}"
    elif p.exists() and not os.access(p, os.W_OK):
        reason = "permission denied"
    elif not p.exists() and not os.access(p.parent, os.W_OK | os.X_OK):
        reason = f"permission denied in {str(p.parent)!r}"
    if reason is not None:
        raise InvalidInputError(f"{display_path(path)}: cannot write ({reason})", field=field)
