"""Only a column that can mark deletions is accepted as a table's soft_delete, and a batch that lacks
it is refused before landing: a flag read wrongly would empty the marts, or bring deleted rows back,
without an error (docs/decisions/0041-soft-deletes.md)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from sources.config import check_shared_tables, load_source, parse_source
from sources.contracts import check_soft_delete
from sources.errors import ConfigError, ContractError
from sources.extract.files import drifted_table


def _source(**table: object) -> dict:
    return {"name": "shop", "kind": "files", "owner": "o", "path": ".", "tables": {"orders": {
        "file": "o.csv", "primary_key": "id", "columns": {"id": "string", "flag": "integer", "gone": "boolean",
                                                          "deleted_at": "timestamp", "updated_at": "timestamp"},
        **table}}}


@pytest.mark.parametrize(("column", "needle"), [
    ("flag", "'flag' is declared integer: only a boolean"),
    ("id", "'id' is also the primary key"),
    ("updated_at", "'updated_at' is also event_time"),
    ("nope", "'nope' must be a declared column"),
])
def test_a_soft_delete_column_that_cannot_mark_deletions_is_refused(column: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_source(_source(soft_delete=column, event_time="updated_at"))


def test_boolean_and_time_columns_are_accepted() -> None:
    for column in ("gone", "deleted_at"):
        assert parse_source(_source(soft_delete=column)).tables["orders"].soft_delete == column


def test_a_batch_whose_soft_delete_column_is_missing_or_of_another_type_is_refused() -> None:
    where = {"source": "shop", "table": "orders"}
    check_soft_delete(pa.record_batch({"gone": pa.array([True, None])}), "gone", where=where)
    check_soft_delete(pa.record_batch({"deleted_at": pa.array([None], pa.timestamp("us"))}), "deleted_at", where=where)
    with pytest.raises(ContractError, match="the source has no column gone"):
        check_soft_delete(pa.record_batch({"id": ["a"]}), "gone", where=where)
    with pytest.raises(ContractError, match="is int64: only a boolean"):  # a 0/1 flag from a catalog
        check_soft_delete(pa.record_batch({"gone": pa.array([0, 1])}), "gone", where=where)


def test_a_file_without_its_soft_delete_column_is_refused_not_landed_as_live_rows() -> None:
    table = parse_source(_source(soft_delete="gone")).tables["orders"]
    with pytest.raises(ContractError, match="'gone', the table's soft_delete, is missing"):
        drifted_table(["id", "flag", "deleted_at", "updated_at"], table, "o.csv", {"table": "orders"})


def test_sources_sharing_a_raw_table_must_agree_on_soft_delete(tmp_path: Path) -> None:
    """A source that does not declare the column would apply rows the other records as deleted as live."""
    def declare(name: str, **table: object) -> None:
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: files\nowner: o\npath: .\nraw_schema: raw_shop\ntables:\n  orders:\n"
            "    file: o.csv\n    primary_key: id\n    columns: {id: string, gone: boolean}\n"
            + "".join(f"    {k}: {v}\n" for k, v in table.items()))

    declare("a", soft_delete="gone")
    declare("b")
    with pytest.raises(ConfigError, match=r"raw_shop.orders is written by sources a \(soft_delete: gone\) and b"):
        check_shared_tables(load_source("a", tmp_path), tmp_path)
    declare("b", soft_delete="gone")
    check_shared_tables(load_source("a", tmp_path), tmp_path)


def test_sources_sharing_a_raw_table_that_differ_in_their_primary_key_say_so(tmp_path: Path) -> None:
    """The primary key was compared but not shown: the message printed the same words for both
    sources, and a probe could not tell what to change."""
    for name, key in (("a", "id"), ("b", "order_id")):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nkind: files\nowner: o\npath: .\nraw_schema: raw_shop\ntables:\n  orders:\n"
            f"    file: o.csv\n    primary_key: {key}\n    event_time: at\n"
            "    columns: {id: string, order_id: string, at: timestamp}\n")
    with pytest.raises(ConfigError) as refused:
        check_shared_tables(load_source("a", tmp_path), tmp_path)
    assert "sources a (primary_key: id, event_time: at" in str(refused.value), refused.value
    assert "and b (primary_key: order_id, event_time: at" in str(refused.value), refused.value
    assert "the same primary_key" in (refused.value.hint or ""), refused.value.hint
