"""The manifest stays readable across versions, and a landing URL never carries credentials."""

from __future__ import annotations

import json

import pytest

from sources.errors import ConfigError
from sources.landing.manifest import LandedFile, Manifest
from sources.landing.store import Landing


def _manifest(**extra: object) -> Manifest:
    return Manifest("B1", "shop", "orders", "2026-12-02T00:00:00+00:00", 1, [{"name": "id", "type": "string", "arrow": "string"}],
                    ["id"], [LandedFile("part-0.parquet", 1, 10, "0" * 64)], **extra)  # type: ignore[arg-type]


def test_changes_only_is_written_only_when_set_so_older_loaders_read_every_other_manifest() -> None:
    plain = json.loads(_manifest().to_json())
    assert "changes_only" not in plain  # what a loader older than the field expects
    assert json.loads(_manifest(changes_only=True).to_json())["changes_only"] is True
    assert Manifest.from_json(json.dumps(plain)).changes_only is False  # a manifest written before the field
    assert Manifest.from_json(_manifest(changes_only=True).to_json()) == _manifest(changes_only=True)


@pytest.mark.parametrize("url", [
    "s3://AKIAEXAMPLE:S3CR3T-plain@landing/prefix",
    "s3://AKIAEXAMPLE:S3CR3T/with+slash@landing/prefix",  # AWS secret keys hold '/' and '+'
    "s3://S3CR3T-token-only@landing",
])
def test_a_landing_url_with_credentials_is_refused_without_showing_them(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        Landing.from_url(url, endpoint="http://127.0.0.1:9")
    message = str(err.value)
    assert "holds credentials" in message and "AWS_SECRET_ACCESS_KEY" in message, message
    assert "S3CR3T" not in message and "AKIAEXAMPLE" not in message, message


def test_an_at_sign_in_the_prefix_is_not_taken_for_credentials() -> None:
    landing = Landing.from_url("s3://landing-bucket/team@example/landing", endpoint="http://127.0.0.1:9")
    assert landing.root == "landing-bucket/team@example/landing"
