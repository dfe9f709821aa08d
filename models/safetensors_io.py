"""Read tensors from a checkpoint's safetensors files, one tensor at a time, without mmap.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (per tensor:
``dtype``, ``shape``, ``data_offsets`` [begin, end) relative to the end of the header; an optional
``__metadata__``), then the data. A sharded checkpoint adds ``model.safetensors.index.json``
whose ``weight_map`` names the file of every tensor.

Tensors are read with ``readinto`` into a buffer of one tensor, never through a memory map:
mapped pages of a file count towards a process's resident memory, so a rank that reads its
stage through mmap peaks near twice what it touched. Reading this way, a rank's peak host
memory is its stage's tensors plus a tensor or two in flight. The headers are parsed in pure
Python; torch is imported when a tensor is read.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SpecError
from .textio import decode_utf8, load_json, loads_json, shorten

if TYPE_CHECKING:
    import torch

__all__ = ["DTYPE_SIZES", "TensorEntry", "TensorIndex", "read_header"]

DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
"""Bytes per element of each safetensors dtype."""

_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its file, dtype, shape and byte range in the file."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    """Absolute byte offset of the data in the file."""
    nbytes: int


def read_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of one safetensors file; SpecError naming the file for a malformed header."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SpecError(f"{path}: not a safetensors file (shorter than its header length)")
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER:
                raise SpecError(f"{path}: safetensors header of {length} bytes is over the "
                                f"format's {_MAX_HEADER} limit")
            raw = f.read(length)
            size = f.seek(0, 2)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) < length:
        raise SpecError(f"{path}: not a safetensors file (its header says {length:,} bytes, "
                        f"the file holds {len(raw):,})")
    header = f"{path}: safetensors header"
    doc = loads_json(decode_utf8(raw, header), header)
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: safetensors header is not a JSON object")
    base = 8 + length
    out: dict[str, TensorEntry] = {}
    for name, info in doc.items():
        if name == "__metadata__":
            continue
        dtype, shape, begin, end = _entry(info)
        if dtype is None:
            raise SpecError(f"{path}: tensor {shorten(name)}: malformed header entry "
                            f"{shorten(info, 80)}")
        if dtype not in DTYPE_SIZES:
            raise SpecError(f"{path}: tensor {shorten(name)}: dtype {shorten(dtype)} is not a "
                            "safetensors dtype")
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        if end - begin != nbytes or begin < 0 or base + end > size:
            raise SpecError(f"{path}: tensor {shorten(name)}: data offsets [{begin}, {end}) do not "
                            f"hold {shorten(shape)} x {dtype} inside the file")
        out[name] = TensorEntry(name, path, dtype, shape, base + begin, nbytes)
    return out


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(info: Any) -> tuple[Any, tuple[int, ...], int, int]:
    """(dtype, shape, begin, end) of a header entry; dtype None when the entry is malformed
    (a shape or offsets that are not whole numbers >= 0 would fail later in arithmetic)."""
    bad: tuple[Any, tuple[int, ...], int, int] = (None, (), 0, 0)
    if not isinstance(info, dict):
        return bad
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or not isinstance(shape, list) or not all(map(_whole, shape)) \
            or not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_whole, offsets)):
        return bad
    return dtype, tuple(shape), offsets[0], offsets[1]


class TensorIndex:
    """Every tensor of a checkpoint directory (one file, or shards and their index)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index = self.directory / INDEX_FILE
        single = self.directory / SINGLE_FILE
        if index.is_file():
            files = self._shards(index)
        elif single.is_file():
            files = [single]
        else:
            found = sorted(self.directory.glob("*.safetensors"))
            if not found:
                other = sorted(p.name for p in self.directory.iterdir()
                               if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".gguf"))
                hint = f" ({other[0]} is not read: save the model with safetensors)" if other \
                    else ""
                raise SpecError(f"{self.directory}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
            files = found
        self.entries: dict[str, TensorEntry] = {}
        for path in files:
            for name, entry in read_header(path).items():
                if name in self.entries:
                    raise SpecError(f"{path}: tensor {name!r} is also in "
                                    f"{self.entries[name].path.name}")
                self.entries[name] = entry

    def _shards(self, index: Path) -> list[Path]:
        doc = load_json(index)
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict):
            raise SpecError(f"{index}: not a safetensors index: weight_map: expected an object, "
                            f"got {shorten(weight_map)}")
        for tensor, shard in weight_map.items():
            # A shard is a file of this directory: a bare name, never a path out of it.
            if not isinstance(shard, str) or not shard or shard != Path(shard).name \
                    or shard in (".", ".."):
                raise SpecError(f"{index}: weight_map[{shorten(tensor)}]: expected a file name "
                                f"in {self.directory}, got {shorten(shard)}")
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (self.directory / n).is_file()]
        if missing:
            raise SpecError(f"{index}: shard {missing[0]!r} is missing from {self.directory}")
        return [self.directory / n for n in names]

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return list(self.entries)

    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

    def entry(self, name: str) -> TensorEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise SpecError(f"{self.directory}: the checkpoint has no tensor {name!r}") from None

    def read_into(self, name: str, target: torch.Tensor) -> bool:
        """Read tensor ``name`` straight into ``target``'s memory when nothing needs converting
        (same dtype and shape, a contiguous CPU tensor): no buffer at all. False otherwise,
        and ``target`` is untouched."""
        entry = self.entry(name)
        if target.device.type != "cpu" or not target.is_contiguous() or \
                tuple(target.shape) != entry.shape or target.dtype != _torch_dtype(entry.dtype):
            return False
        import torch

        _read_bytes(entry, target.view(-1).view(torch.uint8))
        return True

    def read(self, name: str, *, dtype: torch.dtype | None = None,
             device: torch.device | str = "cpu") -> torch.Tensor:
        """The tensor ``name`` (cast to ``dtype`` when given), read alone."""
        import torch

        entry = self.entry(name)
        raw = torch.empty(entry.nbytes, dtype=torch.uint8)
        _read_bytes(entry, raw)
        tensor = raw.view(_torch_dtype(entry.dtype)).reshape(entry.shape)
        if dtype is not None and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        return tensor.to(device)


def _read_bytes(entry: TensorEntry, raw: torch.Tensor) -> None:
    """The tensor's bytes into ``raw`` (a flat uint8 CPU tensor of its size), with readinto."""
    if not entry.nbytes:
        return
    with open(entry.path, "rb") as f:
        f.seek(entry.start)
        got = f.readinto(raw.numpy().data)
    if got != entry.nbytes:
        raise SpecError(f"{entry.path}: tensor {entry.name!r}: read {got} of {entry.nbytes} "
                        "bytes (the file is truncated)")


def _torch_dtype(name: str) -> Any:
    import torch

    table = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
             "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
             "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
             "F8_E4M3": getattr(torch, "float8_e4m3fn", None),
             "F8_E5M2": getattr(torch, "float8_e5m2", None)}
    found = table.get(name)
    if found is None:
        raise SpecError(f"safetensors dtype {name!r} is not readable by this torch")
    return found
