"""Raw SQL on a catalog's own connection, for tests only: faking what an older arrowline left
behind, reading a table whole to compare two catalogs, proving a reader cannot write.

Production code never does this: it asks engine.state by name (test_state_owns_its_sql holds it
to that), which is why the connection is private and reached only from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from engine.state.db import Database, Row
from engine.state.reader import CatalogReader


def sql(catalog: CatalogReader, statement: str, parameters: Sequence[Any] = ()) -> list[Row]:
    """One statement on the catalog's connection (read-only for a reader); its rows."""
    return catalog._db.execute(statement, parameters)


def transaction(catalog: CatalogReader) -> AbstractContextManager[Database]:
    """A writer transaction on the catalog's connection."""
    return catalog._db.transaction()
