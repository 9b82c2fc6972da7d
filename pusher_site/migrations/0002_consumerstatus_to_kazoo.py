"""ConsumerStatus now belongs to the kazoo app (kazoo 0001): forgotten here, table kept."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("pusher_site", "0001_initial"),
        ("kazoo", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[migrations.DeleteModel(name="ConsumerStatus")],
        ),
    ]
