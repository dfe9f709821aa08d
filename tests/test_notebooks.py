"""Every research notebook runs top to bottom from a fresh kernel at the small size."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))
import build  # noqa: E402

EXPECTED = {
    "01_methods": ["methods_random.csv", "methods_zoo.csv", "methods_solve_time.png"],
    "02_paper": ["paper_layouts.csv", "paper.json"],
    "03_capacity_frontier": ["capacity_frontier.csv", "capacity_frontier.png"],
    "04_engines": ["engines.csv", "engines_training.csv", "llama3-8b_vllm_8.json"],
}


@pytest.mark.parametrize("name", sorted(build.NOTEBOOKS))
def test_notebook_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEPART_NB_SIZE", "small")
    monkeypatch.setenv("CACHEPART_RESULTS", str(tmp_path))
    monkeypatch.setenv("CACHEPART_ROOT", str(ROOT))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    committed = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    fresh = nbformat.from_dict(committed)
    for cell in fresh.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # The committed notebook must be what build.py writes (no hand edits that drift).
    sources = [c.source for c in committed.cells]
    assert sources == [src for _, src in build.NOTEBOOKS[name]]
    nbclient.NotebookClient(fresh, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    errors = [o for c in fresh.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    for filename in EXPECTED.get(name, []):
        assert (tmp_path / filename).stat().st_size > 0, filename
    assert os.environ["CACHEPART_RESULTS"] == str(tmp_path)
