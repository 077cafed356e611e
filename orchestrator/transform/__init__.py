"""SQLMesh glue: the windowed transform (`elt transform`), its batch-to-interval bookkeeping,
dev previews with row diffs (`elt preview`) and backfills (`elt backfill`)."""
