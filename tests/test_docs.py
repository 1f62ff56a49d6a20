"""Every public name is on the API page, and every public function documents an example."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

import stfuse as sf

API = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
MODULES = ["io", "datasets", "pp", "gr", "im", "data", "tl", "pl", "models", "nn", "metrics"]
PUBLIC = [(m, n) for m in MODULES for n in importlib.import_module(f"stfuse.{m}").__all__]


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_name_documented(module, name):
    assert f"   {module}.{name}\n" in API, f"add {module}.{name} to an autosummary list in docs/api.md"
    obj = getattr(importlib.import_module(f"stfuse.{module}"), name)
    if inspect.isfunction(obj):
        doc = inspect.getdoc(obj) or ""
        assert "Examples" in doc and ">>>" in doc, f"{module}.{name} needs an Examples section"
        hints = inspect.signature(obj)
        missing = [p for p in hints.parameters.values()
                   if p.annotation is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        assert not missing, f"{module}.{name}: parameters without type hints: {[p.name for p in missing]}"


def test_settings_documented():
    assert sf.settings.__doc__
