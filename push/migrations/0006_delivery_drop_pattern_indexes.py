"""Drop the `varchar_pattern_ops` twins Django makes on PostgreSQL for `msg_id` (unique) and
`call_id` (indexed). They serve only LIKE 'prefix%' queries, and nothing asks one: the admin and the
API match a Call-ID or Msg-ID exactly (the plain btree indexes stay). Measured on a bench delivery
log, they were 44 MB of its 150 MB of indexes: a third of the index writes of every push's row.

DROP INDEX CONCURRENTLY (not in a transaction), so the push lane's inserts go on meanwhile. Reversed,
they are built again CONCURRENTLY under the names Django gives them."""

from django.db import migrations

COLUMNS = ("msg_id", "call_id")


def _like_index_name(schema_editor, model, column):
    return schema_editor._create_index_name(model._meta.db_table, [column], suffix="_like")


def drop_pattern_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("push", "Delivery")
    for column in COLUMNS:
        name = schema_editor.quote_name(_like_index_name(schema_editor, model, column))
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def create_pattern_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("push", "Delivery")
    table = schema_editor.quote_name(model._meta.db_table)
    for column in COLUMNS:
        name = schema_editor.quote_name(_like_index_name(schema_editor, model, column))
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} "
            f"({schema_editor.quote_name(column)} varchar_pattern_ops)"
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("push", "0005_delivery_account_device_indexes"),
    ]

    operations = [migrations.RunPython(drop_pattern_indexes, create_pattern_indexes)]
