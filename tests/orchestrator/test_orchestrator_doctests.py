"""The orchestrator's docstring examples are executed, so they cannot rot."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import orchestrator


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(orchestrator.__path__, "orchestrator."))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
