"""Model specs: a YAML file naming an architecture, its dimensions and its published facts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import SpecError
from .layers import LayerDesc
from .textio import display_path, load_yaml, plain, shorten
from .transformer import Granularity, TransformerSpec
from .vision import ResNetSpec

__all__ = ["ARCHITECTURES", "Architecture", "ModelSpec", "load_spec", "spec_from_dict"]


class Architecture(Protocol):
    def params(self) -> int: ...

    def active_params(self) -> int: ...

    def layer_descs(self, granularity: Granularity = "block") -> list[LayerDesc]: ...


ARCHITECTURES: dict[str, type] = {"transformer": TransformerSpec, "resnet": ResNetSpec}
_TOP = frozenset({"name", "architecture", "arch", "source", "published_params",
                  "published_active_params", "declared_params", "notes"})


def _is_bool_field(field: dataclasses.Field[Any]) -> bool:
    # Annotations are strings here (postponed evaluation): "bool", "bool | None"...
    return "bool" in str(field.type)


def _refuse_bools(source: str, key: str, value: Any) -> None:
    """YAML's true/false are ints to Python (true == 1): a count given as `true` must fail
    here, not pass as 1 through an isinstance(value, int) check further on."""
    values = value if isinstance(value, list | tuple) else [value]
    if any(isinstance(v, bool) for v in values):
        raise SpecError(f"{source}: arch.{key}: expected a number, got {shorten(value)}")


@dataclass(frozen=True)
class ModelSpec:
    """A named architecture with the figures it can be checked against."""

    name: str
    arch: Architecture
    source: str = ""
    published_params: int | None = None
    """The count the model's publisher (or its HF module layout) gives."""
    published_active_params: int | None = None
    declared_params: int | None = None
    """A count stated by a paper that may not match its own dimensions."""
    notes: str = ""

    def params(self) -> int:
        return self.arch.params()

    def parameter_warning(self, tolerance: float = 0.01) -> str | None:
        """A one-line warning when a stated count differs from the computed one by > 1%."""
        computed = self.params()
        for label, stated in (("declared", self.declared_params),
                              ("published", self.published_params)):
            if stated and abs(computed - stated) > tolerance * stated:
                return (f"{self.name}: {label} parameter count {stated:,} differs from the "
                        f"{computed:,} its dimensions give ({computed / stated - 1:+.1%})")
        return None


def spec_from_dict(data: Any, source: str = "spec") -> ModelSpec:
    """Validate a parsed spec document; errors name the source and the field."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {shorten(data)}")
    unknown = sorted(str(key) for key in set(data) - _TOP)
    if unknown:
        raise SpecError(f"{source}: unknown field {shorten(unknown[0])} "
                        f"(known: {', '.join(sorted(_TOP))})")
    for key in ("name", "architecture", "arch"):
        if key not in data:
            raise SpecError(f"{source}: {key}: missing")
    kind = data["architecture"]
    if not isinstance(kind, str) or kind not in ARCHITECTURES:
        raise SpecError(f"{source}: architecture: {shorten(kind)} is not known "
                        f"(known: {', '.join(ARCHITECTURES)})")
    cls = ARCHITECTURES[kind]
    arch_fields = {f.name: f for f in dataclasses.fields(cls)}
    raw = data["arch"]
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: arch: expected a mapping, got {shorten(raw)}")
    for key in raw:
        if key not in arch_fields:
            raise SpecError(f"{source}: arch.{plain(key)}: unknown field for {kind} "
                            f"(known: {', '.join(arch_fields)})")
        if not _is_bool_field(arch_fields[key]):
            _refuse_bools(source, key, raw[key])
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    missing = [f.name for f in arch_fields.values() if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SpecError(f"{source}: arch.{missing[0]}: missing (required for {kind}: "
                        f"{', '.join(missing)})")
    try:
        arch = cls(**values)
    except SpecError as exc:
        raise SpecError(f"{source}: arch.{exc}") from None
    except (TypeError, ValueError) as exc:  # a wrongly typed value the checks did not reach
        raise SpecError(f"{source}: arch: cannot use these values ({exc})") from None
    for key in ("published_params", "published_active_params", "declared_params"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            raise SpecError(f"{source}: {key}: must be a positive whole number, "
                            f"got {shorten(value)}")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise SpecError(f"{source}: name: expected a non-empty string, got {shorten(name)}")
    return ModelSpec(name=name, arch=arch, source=str(data.get("source", "")),
                     published_params=data.get("published_params"),
                     published_active_params=data.get("published_active_params"),
                     declared_params=data.get("declared_params"),
                     notes=str(data.get("notes", "")))


def load_spec(path: str | Path) -> ModelSpec:
    """Read a spec YAML file (models/textio.py: UTF-8, at most 1 MiB, no aliases)."""
    return spec_from_dict(load_yaml(path), source=display_path(path))
