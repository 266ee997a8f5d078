"""docs/design.md (the layers): cutover/ imports neither checks/, flows/ nor Prefect at module level; checks/ never
imports flows/ or Prefect. (A CLI command may import a plug-in lazily, inside the function that needs it.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in tree.body:  # top level only: lazy imports inside functions are the allowed exception
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package,forbidden", [("cutover", {"checks", "flows", "prefect"}), ("checks", {"flows", "prefect"})])
def test_layering(package, forbidden):
    offenders = {str(p.relative_to(REPO)): sorted(module_level_imports(p) & forbidden)
                 for p in (REPO / package).rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
