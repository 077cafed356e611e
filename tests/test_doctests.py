"""Docstring examples are executed, so they cannot rot."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sources


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(sources.__path__, "sources."))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
