"""The delivery log's indexes on PostgreSQL: the ones its queries use, and not the pattern-ops twins
Django makes for CharFields (push/migrations/0006), which only a LIKE 'prefix%' would use."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_no_pattern_ops_index_on_the_delivery_log() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no operator classes")
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'push_delivery'")
        indexes = dict(cursor.fetchall())
    assert not [name for name, definition in indexes.items() if "pattern_ops" in definition]
    # The exact lookups keep their indexes: a Msg-ID's claim (unique) and a Call-ID's search.
    assert any("UNIQUE" in d and "(msg_id)" in d for d in indexes.values())
    assert any("(call_id)" in d for d in indexes.values())
