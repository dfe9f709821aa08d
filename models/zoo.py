"""The built-in model zoo: one spec YAML per model in models/zoo/."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from .errors import SpecError
from .spec import ModelSpec, spec_from_dict
from .textio import loads_yaml, shorten

__all__ = ["load_zoo_model", "zoo_names"]


def _files() -> dict[str, str]:
    root = resources.files("models").joinpath("zoo")
    return {f.name[: -len(".yaml")]: f.read_text("utf-8")
            for f in root.iterdir() if f.name.endswith(".yaml")}


@lru_cache(maxsize=1)
def _zoo() -> dict[str, str]:
    return dict(sorted(_files().items()))


def zoo_names() -> list[str]:
    return list(_zoo())


def load_zoo_model(name: str) -> ModelSpec:
    texts = _zoo()
    if name not in texts:
        raise SpecError(f"model {shorten(name)} is not in the zoo (known: {', '.join(texts)})")
    source = f"zoo/{name}.yaml"
    return spec_from_dict(loads_yaml(texts[name], source), source=source)
