"""ConsumerStatus moves here from pusher_site: state only, the table stays (pusher_site 0001 made it)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("pusher_site", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='ConsumerStatus',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(help_text='host:pid', max_length=200, unique=True)),
                        ('connected', models.BooleanField(default=False)),
                        ('started_at', models.DateTimeField()),
                        ('last_message_at', models.DateTimeField(blank=True, null=True)),
                        ('messages_total', models.BigIntegerField(default=0)),
                        ('messages_per_s', models.FloatField(default=0)),
                        ('updated_at', models.DateTimeField()),
                    ],
                    options={
                        'verbose_name_plural': 'consumer status',
                        'db_table': 'pusher_site_consumerstatus',
                        'ordering': ['-updated_at'],
                    },
                ),
            ],
        ),
    ]
