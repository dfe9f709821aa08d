"""Reading the text files cachepart takes as input: one path per format, bounded in every way.

Every JSON and YAML input (specs, Hugging Face configs, safetensors headers and indexes here;
chains, plans, profiles, clusters and device files through ``solver.core.files``) is read by
these functions, so a hostile file fails the same way everywhere, with one line naming the file:

- text is UTF-8 (a leading byte-order mark is dropped); anything else is refused with the first
  bad byte and its offset, so a PNG or a UTF-16 file never reaches a parser;
- a file over a size limit is refused before it is decoded: 64 MiB for JSON, 1 MiB for YAML,
  and YAML with over 100,000 events: PyYAML takes ~4 s for a MiB of small values even with
  libyaml, ~20 s without (input YAML files are specs and device files of a few KiB);
- nesting deeper than ``MAX_DEPTH`` levels is refused, so no reader, message or copy of the
  data recurses past Python's limit later;
- YAML anchors and aliases are refused: a few lines of aliases expand to billions of values
  for whatever walks the data (the "billion laughs"), and no input format here needs them.

Errors are :class:`SpecError` (``solver.core.files`` re-raises them as its own error).
"""

from __future__ import annotations

import json
import os
import reprlib
import sys
from pathlib import Path
from typing import Any

from .errors import SpecError

__all__ = [
    "MAX_DEPTH",
    "MAX_JSON_BYTES",
    "MAX_YAML_BYTES",
    "MAX_YAML_EVENTS",
    "JSONSyntaxError",
    "decode_utf8",
    "display_path",
    "load_json",
    "load_yaml",
    "loads_json",
    "loads_yaml",
    "plain",
    "read_text",
    "shorten",
]

MAX_JSON_BYTES = 64 * 2**20
MAX_YAML_BYTES = 2**20
MAX_DEPTH = 200
"""Deepest nesting of lists and objects an input may have (the plans, chains and schema the
project ships nest 11 deep at most)."""
MAX_YAML_EVENTS = 100_000
"""Most YAML events (values, starts and ends of lists and mappings) a file may have: building
them costs ~5 us each with libyaml, ~45 us without (the shipped catalogue has ~1,000)."""

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8


class JSONSyntaxError(SpecError):
    """A file that is not valid JSON; carries where, so a reader may word it its own way."""

    def __init__(self, message: str, *, problem: str, line: int, column: int) -> None:
        super().__init__(message)
        self.problem = problem
        self.line = line
        self.column = column


def shorten(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, ending in '...' when cut. The work is
    bounded whatever the value (a 64 MiB string, a list of millions), so a message can quote
    any input."""
    if isinstance(value, str):
        text = repr(value[:limit])
    else:
        try:
            text = _REPR.repr(value)
        except ValueError:  # an int past the interpreter's digit limit for str()
            return f"<a number of {value.bit_length() if isinstance(value, int) else '?'} bits>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def plain(value: object, limit: int = 60) -> str:
    """A name as a message shows it unquoted (a field, a key): as given when it is a short,
    printable string, else quoted and cut like ``shorten`` (a newline in a key, or a key of
    5,000 characters, would break the one-line rule)."""
    if isinstance(value, str) and len(value) <= limit and value.isprintable():
        return value
    return shorten(value, limit)


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as a message shows it: as given when it is short and printable, else quoted and
    cut."""
    text = os.fspath(path)
    return text if len(text) <= 200 and text.isprintable() else shorten(text, 80)


def _size(nbytes: int) -> str:
    return f"{nbytes // 2**20} MiB" if nbytes >= 2**20 and nbytes % 2**20 == 0 else f"{nbytes:,} bytes"


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` as text, or SpecError "``source``: not UTF-8 text (byte 0xe9 at offset 10)"."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        hint = ""
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = "; it starts with a UTF-16 byte-order mark: save it as UTF-8"
        raise SpecError(f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                        f"{exc.start}{hint})") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_text(path: str | os.PathLike[str], what: str = "file",
              limit: int = MAX_JSON_BYTES) -> str:
    """The UTF-8 text of a file of at most ``limit`` bytes; SpecError naming the file
    otherwise. Reads at most ``limit`` + 1 bytes, so /dev/zero or a huge file cannot hang it."""
    source = display_path(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = handle.read(limit + 1) if size <= limit else b""
    except OSError as exc:
        raise SpecError(f"{source}: cannot read the {what} ({exc.strerror or exc})") from None
    except ValueError:  # open() refuses a path with a NUL character
        raise SpecError(f"{source}: cannot read the {what} (the path has a NUL character)") from None
    if size > limit or len(data) > limit:  # size is 0 for a pipe or a device: count what came
        got = f"{size:,} bytes, over" if size > limit else "more than"
        raise SpecError(f"{source}: cannot read the {what} ({got} the {_size(limit)} limit)")
    return decode_utf8(data, f"{source}: cannot read the {what}")


def _max_digits() -> int:
    # Python 3.10 before 3.10.7 has no limit, and no such ValueError to explain
    return int(getattr(sys, "get_int_max_str_digits", lambda: 4300)())


def _check_depth(doc: Any, source: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, walking without recursion."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    raise SpecError(f"{source}: nested deeper than {MAX_DEPTH} levels")
                stack.append((child, depth + 1))


def loads_json(text: str, source: str) -> Any:
    """Parse JSON text; SpecError naming ``source`` (JSONSyntaxError for a syntax error)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONSyntaxError(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg})", problem=exc.msg, line=exc.lineno,
                              column=exc.colno) from None
    except RecursionError:  # the parser recurses once per level
        raise SpecError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # an integer past the interpreter's digit limit
        raise SpecError(f"{source}: not valid JSON (a number of more than "
                        f"{_max_digits()} digits)") from None
    if isinstance(doc, dict | list):
        _check_depth(doc, source)
    return doc


def load_json(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Read and parse a JSON file (UTF-8, at most 64 MiB, at most MAX_DEPTH deep)."""
    return loads_json(read_text(path, what, MAX_JSON_BYTES), display_path(path))


def _yaml_loader() -> type:
    import yaml

    # libyaml where installed: the pure-Python parser is five times slower
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def loads_yaml(text: str, source: str) -> Any:
    """Parse YAML text with the safe loader, refusing anchors, aliases and deep nesting;
    SpecError naming ``source`` and the line."""
    import yaml

    loader = _yaml_loader()
    try:
        # A first pass over the events (no values built) finds aliases and depth before the
        # loader composes anything, since its composer recurses once per level.
        depth = 0
        for count, event in enumerate(yaml.parse(text, Loader=loader)):
            if count >= MAX_YAML_EVENTS:
                raise SpecError(f"{source}: more than {MAX_YAML_EVENTS:,} YAML values and "
                                "brackets (input YAML files hold hundreds)")
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                line = event.start_mark.line + 1 if event.start_mark is not None else 0
                raise SpecError(f"{source}: YAML anchors and aliases (&name, *name) are not "
                                f"allowed (line {line})")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise SpecError(f"{source}: nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.load(text, Loader=loader)  # the safe loader: plain data only
    except SpecError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{source}: not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise SpecError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # an integer past the interpreter's digit limit
        raise SpecError(f"{source}: not valid YAML (a number of more than "
                        f"{_max_digits()} digits)") from None


def load_yaml(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Read and parse a YAML file (UTF-8, at most 1 MiB, no aliases, at most MAX_DEPTH deep)."""
    return loads_yaml(read_text(path, what, MAX_YAML_BYTES), display_path(Path(path)))
