"""pusher's ASGI application with the static files served (daphne alone does not, and the live
stack runs with DEBUG off) so the browser test sees the admin as people do."""

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

from pusher_site.asgi import application as pusher_application

application = ASGIStaticFilesHandler(pusher_application)
