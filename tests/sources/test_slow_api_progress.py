"""Records of a slow API reach landing at least every few seconds (an observability probe: at 0.3 s
a page of 100, the progress line was silent for 30 s, and at 1 s a page for 100 s)."""

from __future__ import annotations

from sources.config import parse_source
from sources.extract import arrow


def test_a_slow_api_hands_its_records_on_every_few_seconds(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = {"now": 0.0}
    monkeypatch.setattr(arrow.time, "monotonic", lambda: clock["now"])
    spec = parse_source({"name": "api", "kind": "rest_api", "owner": "x", "base_url": "http://127.0.0.1:9",
                         "tables": {"items": {"endpoint": "/items", "primary_key": "id", "columns": {"id": "integer"}}}})

    def pages():  # type: ignore[no-untyped-def]
        for page in range(20):
            clock["now"] += 1.0  # one second a page of 100
            yield [{"id": page * 100 + i} for i in range(100)]

    sizes = [b.num_rows for b in arrow.records_to_batches(pages(), spec.tables["items"], {"source": "api"})]
    assert sum(sizes) == 2000 and sizes == [500] * 4, sizes  # every 5 s, not once at 10,000 records
