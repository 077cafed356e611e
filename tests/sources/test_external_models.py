from __future__ import annotations

from sources import external_models
from tests.conftest import ROOT


def test_external_models_yaml_is_up_to_date_with_the_declarations() -> None:
    committed = (ROOT / "external_models.yaml").read_text()
    assert committed == external_models.render(), "run `elt sources --write-external-models` and commit the result"
