"""The declared dependencies are the ones stfuse uses."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_NAMES = {"scikit-learn": "sklearn", "pillow": "PIL", "torch-geometric": "torch_geometric"}
# declared although src does not import them; each with its reason
NOT_IMPORTED = {
    "squidpy": "interop: the docs and tests run squidpy on stfuse's results",
    "torch-geometric": "not imported either; kept until the lead decides (issue 18 follow-up)",
}


def test_every_runtime_dependency_is_imported():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in deps]
    assert "leidenalg" not in names  # igraph's own Leiden is used (Graph.community_leiden)
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "stfuse").rglob("*.py"))
    unused = []
    for name in names:
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        if not re.search(rf"^\s*(import|from) {re.escape(module)}(\.|\s|$)", source, re.M) and name not in NOT_IMPORTED:
            unused.append(name)
    assert unused == [], f"declared in pyproject.toml but never imported by src/stfuse: {unused}"
