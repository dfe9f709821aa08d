"""Reading JSON inputs and checking output paths, with errors that name the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import InvalidInputError

__all__ = ["check_output_path", "read_json"]


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; errors name the file, and the line for a syntax error."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"{p}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                                f"{exc.msg})") from None


def check_output_path(path: str, field: str) -> None:
    """Refuse an output file that cannot be written (a folder, a missing or read-only folder)
    before any work is done: InvalidInputError naming ``field`` and the path. Creates nothing."""
    if not path:
        raise InvalidInputError("expected a file path, got ''", field=field)
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
        raise InvalidInputError(f"{path}: cannot write ({reason})", field=field)
