"""Demo sources over the real protocols: the Jaffle Shop split as data teams see it.

- ``appdb``: an application database in PostgreSQL (customers, orders, items).
- ``catalog_api``: a catalog HTTP API (products, stores, supplies), paginated, bearer auth.

Both release the jafgen data "as of" a given day, so a run of daily loads can be replayed.
"""
