"""What the add_*_app commands print (not a command: Django skips modules starting with "_")."""

from django.core.management.base import BaseCommand

from push.services import PushAppAdded


def app_added_write(command: BaseCommand, added: PushAppAdded) -> None:
    app, credential = added.app, added.credential
    command.stdout.write(f"push app {app.app_id} ({app.provider}) saved, {'enabled' if app.enabled else 'disabled'}")
    if app.provider == "apple":
        push_type, topic = app.apns_wire()
        kind = push_type if app.push_type else f"{push_type} (as Kazoo: no push type set)"
        command.stdout.write(f"  host {app.host}:{app.port}, topic {topic}, push type {kind}")
    state = {
        "kept": "kept: the one given cannot send",
        "updated": "updated: its secret replaced in place, every app on it follows",
        "created": "stored",
    }.get(added.credential_outcome, "already stored, reused")
    command.stdout.write(f"  credential {credential.name!r} ({credential.get_kind_display()}, {state})")
    for label, value in (
        ("subject", credential.subject),
        ("topics", ", ".join(credential.topics)),
        ("environment", credential.environment),
        ("expires", f"{credential.not_after:%Y-%m-%d}" if credential.not_after else ""),
        ("key id", credential.key_id),
        ("team id", credential.team_id),
        ("project", credential.project_id),
        ("client", credential.client_email),
    ):
        if value:
            command.stdout.write(f"  {label}: {value}")
    for warning in added.warnings:
        command.stdout.write(command.style.WARNING(f"warning: {warning}"))
