"""`python -m tests.live.seed`: prepares the live stack's own database (run in its environment):
the schema, a staff user, the User-Agent rule of the Kamailio samples and an Apple app whose
certificate the fake APNs issued."""

import argparse
from pathlib import Path

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--cert-file", required=True)
    parser.add_argument("--apns-host", required=True)
    parser.add_argument("--apns-port", type=int, required=True)
    args = parser.parse_args()

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from push import services
    from push.models import Provider
    from registry.models import UserAgentRule

    call_command("migrate", interactive=False, verbosity=0)
    get_user_model().objects.create_superuser(args.username, f"{args.username}@example.com", args.password)
    UserAgentRule.objects.create(
        name="AcmePhone", position=10, regex="^AcmePhone",
        properties={"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"},
    )
    parsed = services.credential_parse(kind="apns_certificate", data=Path(args.cert_file).read_text())
    credential = services.credential_save(name="acme voip", parsed=parsed)
    services.push_app_upsert(
        app_id="com.acme.phone.voip.prod", provider=Provider.APPLE, credential=credential,
        host=args.apns_host, port=args.apns_port, push_type="voip",
    )


if __name__ == "__main__":
    main()
