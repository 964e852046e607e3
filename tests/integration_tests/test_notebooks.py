"""Every notebook executes top to bottom against the real servers (the session's pool keeps them
up, so the notebooks' own ``launcher.launch`` reuses them).

A notebook that teaches real behaviour runs as it is (the quickstart, compose). One that only
repeats it over more settings runs shorter here: the test puts a cell of its own right after the
notebook's cell tagged ``parameters`` (papermill's convention), overriding what that cell set.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
SHORTER = {
    "threshold_sweep": "PROBLEMS = PROBLEMS[:1]  # every threshold on one problem, two short steps\n"
                       "SETTINGS = {**SETTINGS, 'token_budget': 48, 'max_step_tokens': 24}",
}
"""Per notebook: what the injected cell runs."""


def with_parameters(notebook: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    at = next(i for i, cell in enumerate(notebook.cells)
              if "parameters" in cell.get("metadata", {}).get("tags", []))
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(at + 1, cell)
    return notebook


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, local_servers):
    notebook = nbformat.read(path, as_version=4)
    if path.stem in SHORTER:
        notebook = with_parameters(notebook, SHORTER[path.stem])
    NotebookClient(notebook, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
