"""Loaders: extract from a source, land immutable Parquet batches, append them to raw tables.

The package follows the stages of the flow:

- ``config``: declarative source declarations (``sources/declarations/*.yaml``), validated at load.
- ``extract``: readers that turn a source table into bounded Arrow record batches.
- ``landing``: the immutable batch store (Parquet files plus a manifest written last).
- ``load``: appending landed batches to raw warehouse tables, one transaction per batch.
- ``pipeline``: the run of one source, table by table, reconciling landing with raw.
"""
