"""`manage.py add_google_app APP_ID SECRET`: Kazoo's older name for add_firebase_app."""

from push.management.commands.add_firebase_app import Command as FirebaseCommand


class Command(FirebaseCommand):
    help = "Kazoo's pre-2019 name for add_firebase_app (Google's GCM/FCM). " + FirebaseCommand.help
