"""A migration operation the apps share: building an index without blocking writes."""

from __future__ import annotations

from typing import Any

from django.db import migrations


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    """AddIndex, CONCURRENTLY on PostgreSQL, so the consumer's writes go on while a big table is
    read (its migration needs `atomic = False`); a plain AddIndex elsewhere (SQLite). Django's own
    `AddIndexConcurrently` is PostgreSQL-only."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, concurrently=True)
        return None

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, concurrently=True)
        return None


class RemoveFieldIndexConcurrentlyOnPostgres(migrations.AlterField):
    """AlterField for a CharField that only loses `db_index`: on PostgreSQL its index and the
    `varchar_pattern_ops` twin Django made beside it are dropped CONCURRENTLY (a plain DROP INDEX
    takes a lock that, queued behind any long read, holds up every insert); a plain AlterField
    elsewhere. Reversed, they are built again, CONCURRENTLY, under Django's names."""

    def _names(self, schema_editor: Any, model: Any) -> tuple[str, str, list[tuple[str, str]]]:
        table, column = model._meta.db_table, model._meta.get_field(self.name).column
        names = [(schema_editor._create_index_name(table, [column], suffix=suffix), opclass)
                 for suffix, opclass in (("", ""), ("_like", " varchar_pattern_ops"))]
        return table, column, names

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        _, _, names = self._names(schema_editor, from_state.apps.get_model(app_label, self.model_name))
        for name, _ in names:
            schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(name)}")
        return None

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        table, column, names = self._names(schema_editor, to_state.apps.get_model(app_label, self.model_name))
        quote = schema_editor.quote_name
        for name, opclass in names:
            schema_editor.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote(name)} ON {quote(table)} ({quote(column)}{opclass})"
            )
        return None
