"""pusher settings: read from the environment once, here (django-environ).

Dev defaults are obviously fake and only apply when DEBUG is on; in production the
secrets have no default and a missing one stops the boot with a clear message.
"""

import math
import sys
from pathlib import Path
from typing import NoReturn

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():  # (django-environ logs "not found" otherwise, under daphne at INFO)
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
DATA_DIR = Path(env.str("PUSHER_DATA_DIR", default=str(BASE_DIR / "data")))


def _stop(message: str) -> NoReturn:
    """A setting that makes the boot impossible: one line on stderr, no traceback, exit status 2
    (from manage.py, daphne and bin/serve alike)."""
    sys.stderr.write(f"pusher: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def _at_least(name: str, raw: str, minimum: float, cast: type[float] | type[int] = float) -> float:
    """A number read from the environment (as text: django-environ would turn "abc" into a
    traceback and take "nan" or "inf"), finite and at least `minimum`, or the boot stops in one line."""
    try:
        value = cast(raw)
    except ValueError:
        value = float("nan")
    if not (value >= minimum and math.isfinite(value)):  # (also refuses NaN and infinity)
        _stop(f"{name} must be {'a whole number' if cast is int else 'a number'} of at least {minimum:g}; "
              f"got {raw!r}")
    return value


def _whole(name: str, raw: str, minimum: int) -> int:
    return int(_at_least(name, raw, minimum, int))


def _required_secret(name: str, dev_value: str) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if DEBUG:
        return dev_value
    _stop(f"{name} is required when DEBUG is off (set it in the environment or .env; DEBUG=1 for a development run)")


SECRET_KEY = _required_secret("SECRET_KEY", "dev-insecure-not-a-secret-do-not-use-in-production")
# Comma-separated Fernet keys: the first encrypts, all decrypt, so a key can be rotated
# by prepending a new one and running `manage.py credentials_reencrypt`.
FIELD_ENCRYPTION_KEY = [
    key.strip()
    for key in _required_secret("FIELD_ENCRYPTION_KEY", "ZGV2LWZha2Uta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=").split(",")
    if key.strip()
]

try:  # a malformed key must stop the boot, not the first credential save
    import base64 as _b64

    if not FIELD_ENCRYPTION_KEY:
        raise ValueError
    for _key in FIELD_ENCRYPTION_KEY:
        if len(_b64.urlsafe_b64decode(_key.encode())) != 32:
            raise ValueError
except ValueError:
    _stop("FIELD_ENCRYPTION_KEY must be comma-separated Fernet keys (32 url-safe base64-encoded bytes each)")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# The consumer (`manage.py runconsumer`) serves no HTTP, so it goes without what only pages need; the
# app registry, and so the models, are the same in every process. daphne's app is here (first) only
# so that `manage.py runserver` serves ASGI (the websocket); importing it loads Twisted and autobahn,
# about 35 MB. The admin's SimpleAdminConfig registers no ModelAdmin (no autodiscover of admin.py
# modules, their forms and widgets: 1.3 MB); the consumer runs no system checks that would look.
_CONSUMER = sys.argv[1:2] == ["runconsumer"]

INSTALLED_APPS = [
    *([] if _CONSUMER else ["daphne"]),
    "django.contrib.admin.apps.SimpleAdminConfig" if _CONSUMER else "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Swagger UI's and Redoc's files, served from here: /api/docs/ works without reaching a CDN.
    "drf_spectacular_sidecar",
    "channels",
    "pusher_site",
    "tenancy",
    "registry",
    "push",
    "kazoo",
    "hooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (collected into STATIC_ROOT by `manage.py collectstatic`, bin/serve does it)
    # served by the app itself, under daphne too; with DEBUG on, straight from the apps' folders.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "pusher_site.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "pusher_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'pusher.sqlite3'}"),
}
# The consumer is long-lived: keep connections, but check them so a restarted
# PostgreSQL is noticed instead of failing the next query.
DATABASES["default"].setdefault("CONN_MAX_AGE", _whole("DB_CONN_MAX_AGE", env.str("DB_CONN_MAX_AGE", default="60"), 0))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL + a busy timeout let the web process and the consumer share the embedded file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    # Tests too: Django's default in-memory test database is shared-cache, whose table locks fail
    # at once ("database table is locked") instead of waiting out the timeout when the consumer's
    # threads write together; a file keeps the same locking as production.
    DATABASES["default"].setdefault("TEST", {}).setdefault("NAME", str(DATA_DIR / "test.sqlite3"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

# --- Broker and the Kazoo bus ------------------------------------------------------
AMQP_URL = env.str("AMQP_URL", default="amqp://guest:guest@127.0.0.1:5672/%2F")
PUSHER_QUEUE_NAME = env.str("PUSHER_QUEUE_NAME", default="pusher_shared_listener")
# The shared queue is declared as Kazoo's pusher declares it (kazoo.topology.QueueDeclaration), so
# both can run during a migration: non-durable, auto-delete, x-max-length 100, x-message-ttl 60 s.
PUSHER_QUEUE_DURABLE = env.bool("PUSHER_QUEUE_DURABLE", default=False)
PUSHER_QUEUE_AUTO_DELETE = env.bool("PUSHER_QUEUE_AUTO_DELETE", default=True)


def _queue_limit(name: str, value: str, minimum: int) -> int | None:
    """A queue argument: an integer, or `none` to leave the argument out."""
    if value.strip().lower() == "none":
        return None
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if not minimum <= number <= 2**31 - 1:
        _stop(f"{name} must be an integer from {minimum} to 2147483647, or none (no such argument); got {value!r}")
    return number


PUSHER_QUEUE_MAX_LENGTH = _queue_limit("PUSHER_QUEUE_MAX_LENGTH", env.str("PUSHER_QUEUE_MAX_LENGTH", default="100"), 1)
PUSHER_QUEUE_MESSAGE_TTL_MS = _queue_limit(
    "PUSHER_QUEUE_MESSAGE_TTL_MS", env.str("PUSHER_QUEUE_MESSAGE_TTL_MS", default="60000"), 0
)
PUSHER_DEAD_LETTER_EXCHANGE = env.str("PUSHER_DEAD_LETTER_EXCHANGE", default="pusher.dead_letter")
PUSHER_DEAD_LETTER_QUEUE = env.str("PUSHER_DEAD_LETTER_QUEUE", default="pusher_dead_letters")
# Unacked messages in hand. The push engine keeps them all in flight at once (coroutines, not
# threads) and claims/records them in batches as big as what is in hand: bigger batches cost less
# per push, and 1,000 in hand lets one process sustain ~1,000 pushes/s at 30 ms per push.
PUSHER_PREFETCH = _whole("PUSHER_PREFETCH", env.str("PUSHER_PREFETCH", default="1000"), 1)
PUSHER_WORKERS = _whole("PUSHER_WORKERS", env.str("PUSHER_WORKERS", default="32"), 1)
PUSHER_CONSUMER_PROCESSES = _whole("PUSHER_CONSUMER_PROCESSES", env.str("PUSHER_CONSUMER_PROCESSES", default="1"), 1)
PUSHER_MAX_MESSAGE_BYTES = _whole(
    "PUSHER_MAX_MESSAGE_BYTES", env.str("PUSHER_MAX_MESSAGE_BYTES", default=str(256 * 1024)), 1024
)
# An unchanged re-REGISTER costs no write, except this refresh of last-seen times.
PUSHER_LAST_SEEN_INTERVAL_S = _whole(
    "PUSHER_LAST_SEEN_INTERVAL_S", env.str("PUSHER_LAST_SEEN_INTERVAL_S", default="3600"), 0
)
PUSHER_REGEX_TIMEOUT_S = _at_least("PUSHER_REGEX_TIMEOUT_S", env.str("PUSHER_REGEX_TIMEOUT_S", default="0.1"), 0.001)

# --- Push path ----------------------------------------------------------------------
PUSHER_PUSH_DEADLINE_S = _at_least("PUSHER_PUSH_DEADLINE_S", env.str("PUSHER_PUSH_DEADLINE_S", default="20.0"), 1)
PUSHER_APNS_CA_FILE = env.str("PUSHER_APNS_CA_FILE", default="") or None
PUSHER_APNS_JWT_MAX_AGE_S = _whole(
    "PUSHER_APNS_JWT_MAX_AGE_S", env.str("PUSHER_APNS_JWT_MAX_AGE_S", default="3000"), 60
)
PUSHER_FCM_ENDPOINT = env.str("PUSHER_FCM_ENDPOINT", default="https://fcm.googleapis.com")
PUSHER_FCM_CA_FILE = env.str("PUSHER_FCM_CA_FILE", default="") or None
PUSHER_LEGACY_PUSH_RESP = env.bool("PUSHER_LEGACY_PUSH_RESP", default=False)
PUSHER_BAD_DEVICE_TOKEN_FLAG_AFTER = _whole(
    "PUSHER_BAD_DEVICE_TOKEN_FLAG_AFTER", env.str("PUSHER_BAD_DEVICE_TOKEN_FLAG_AFTER", default="5"), 1
)
# The consumer opens provider connections (APNs TLS + HTTP/2 + JWT, FCM access tokens) in the
# background once it is consuming (kazoo.warmup). Off when warming would only log noise (e.g. many
# apps with broken credentials): each connection then opens on its app's first push.
PUSHER_PROVIDER_WARMUP = env.bool("PUSHER_PROVIDER_WARMUP", default=True)

# --- Kazoo Crossbar (device document sync); unset = store locally only ----------------
KAZOO_CROSSBAR_URL = env.str("KAZOO_CROSSBAR_URL", default="")
KAZOO_API_KEY = env.str("KAZOO_API_KEY", default="")
KAZOO_CA_FILE = env.str("KAZOO_CA_FILE", default="") or None
# Drift repair: every this many seconds the consumer compares a batch of Kazoo's device documents'
# push objects with pusher's and queues the ones that differ for sync (0 = off).
PUSHER_RECONCILE_INTERVAL_S = _at_least(
    "PUSHER_RECONCILE_INTERVAL_S", env.str("PUSHER_RECONCILE_INTERVAL_S", default="3600.0"), 0
)
PUSHER_RECONCILE_BATCH = _whole("PUSHER_RECONCILE_BATCH", env.str("PUSHER_RECONCILE_BATCH", default="500"), 1)

# --- Retention (push.services.retention, `manage.py prune`) ---------------------------------


def _whole_number(name: str, value: str, *, maximum: int, zero: str) -> int:
    """A count of days or seconds: a whole number from 0 to `maximum`; 0 means `zero`."""
    try:
        number = int(value.strip())
    except ValueError:
        number = -1
    if not 0 <= number <= maximum:
        _stop(f"{name} must be a whole number from 0 ({zero}) to {maximum}; got {value!r}")
    return number


# Finished deliveries older than this many days are deleted (a queued one never is); 0 keeps them all.
PUSHER_DELIVERY_RETENTION_DAYS = _whole_number(
    "PUSHER_DELIVERY_RETENTION_DAYS", env.str("PUSHER_DELIVERY_RETENTION_DAYS", default="30"),
    maximum=36500, zero="keep forever",
)
# Only what is already dead: inactive tokens, and devices without a push object or an active token,
# untouched for this many days (registry.retention says why); 0 keeps them all.
PUSHER_DEVICE_RETENTION_DAYS = _whole_number(
    "PUSHER_DEVICE_RETENTION_DAYS", env.str("PUSHER_DEVICE_RETENTION_DAYS", default="0"),
    maximum=36500, zero="keep forever",
)
# The consumer prunes every this many seconds (the first time a minute after it starts).
PUSHER_PRUNE_INTERVAL_S = _whole_number(
    "PUSHER_PRUNE_INTERVAL_S", env.str("PUSHER_PRUNE_INTERVAL_S", default="3600"),
    maximum=31_536_000, zero="the consumer never prunes",
)


# --- Webhooks and alerts (README, "Webhooks and alerts") ----------------------------------------


# The consumer's webhook thread: checks (consumers, credentials), queues events, sends (0 = off).
PUSHER_WEBHOOK_INTERVAL_S = _at_least("PUSHER_WEBHOOK_INTERVAL_S", env.str("PUSHER_WEBHOOK_INTERVAL_S", default="5"),
                                      0)
PUSHER_WEBHOOK_TIMEOUT_S = _at_least("PUSHER_WEBHOOK_TIMEOUT_S", env.str("PUSHER_WEBHOOK_TIMEOUT_S", default="5"),
                                     0.1)
PUSHER_WEBHOOK_MAX_ATTEMPTS = int(_at_least("PUSHER_WEBHOOK_MAX_ATTEMPTS",
                                            env.str("PUSHER_WEBHOOK_MAX_ATTEMPTS", default="12"), 1, int))
PUSHER_WEBHOOK_RETRY_S = _at_least("PUSHER_WEBHOOK_RETRY_S", env.str("PUSHER_WEBHOOK_RETRY_S", default="10"), 0)
PUSHER_WEBHOOK_RETRY_MAX_S = _at_least("PUSHER_WEBHOOK_RETRY_MAX_S",
                                       env.str("PUSHER_WEBHOOK_RETRY_MAX_S", default="3600"), 0)
PUSHER_WEBHOOK_MAX_AGE_S = _at_least("PUSHER_WEBHOOK_MAX_AGE_S", env.str("PUSHER_WEBHOOK_MAX_AGE_S", default="86400"),
                                     0)
# No heartbeat of a connected consumer for this long is an outage (consumer.down).
PUSHER_CONSUMER_DOWN_AFTER_S = _at_least("PUSHER_CONSUMER_DOWN_AFTER_S",
                                         env.str("PUSHER_CONSUMER_DOWN_AFTER_S", default="60"), 15)
try:
    PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS = sorted(
        {int(days) for days in env.list("PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS", default=["30", "7", "1"])},
        reverse=True,
    )
    if any(days < 1 for days in PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS):
        raise ValueError
except ValueError:
    _stop("PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS must be comma-separated whole numbers of days, each at least 1")
PUSHER_ALERT_EMAILS = env.list("PUSHER_ALERT_EMAILS", default=[])
# Django's mail settings from one URL (django-environ): smtp://user:password@host:587 with
# smtp+tls:// or smtp+ssl://; consolemail:// prints them. Development prints them by default.
_email = env.email_url("EMAIL_URL", default="consolemail://" if DEBUG else "smtp://localhost:25")
vars().update({name: value for name, value in _email.items() if value is not None})
EMAIL_TIMEOUT = 10  # seconds; Django's default waits forever on a mail server that stops answering
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="pusher@localhost")

# --- Live feed ------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
PUSHER_METRICS_PUBLIC = env.bool("PUSHER_METRICS_PUBLIC", default=True)

# --- API ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        # `Authorization: Bearer pst_...`: a token limited to some Kazoo accounts (tenancy).
        "pusher_site.api.auth.ScopedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["pusher_site.api.conventions.ModelPermissions"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["rest_framework.filters.OrderingFilter"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "pusher_site.api.conventions.exception_handler",
    # JSON with a body size (DATA_UPLOAD_MAX_MEMORY_SIZE) and nesting-depth limit; DRF's form parsers
    # as before, for views that take no parser_classes of their own.
    "DEFAULT_PARSER_CLASSES": [
        "pusher_site.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "pusher API",
    "DESCRIPTION": "Provisioning API of pusher, the VoIP push service for Kazoo.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Nothing but login, health and metrics answers anonymous callers; the schema needs a login too.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # /api/docs/ loads Swagger UI from our own static files (drf-spectacular-sidecar), not a public CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Security (production) ------------------------------------------------------------
# pusher serves plain HTTP; TLS is terminated by a proxy in front of it. Only when that proxy is
# declared trusted (it sets X-Forwarded-Proto and overwrites whatever a client sent) does a request
# carrying "X-Forwarded-Proto: https" count as secure; otherwise any client could claim it.
PUSHER_TRUST_X_FORWARDED_PROTO = env.bool("PUSHER_TRUST_X_FORWARDED_PROTO", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PUSHER_TRUST_X_FORWARDED_PROTO else None
# Off by default: on plain HTTP it would send every page to an https:// nothing answers.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Cookies are marked Secure when the site is reached over HTTPS, as the two settings above say;
# a browser would not send them back over plain HTTP (the admin login would fail its CSRF check).
SESSION_COOKIE_SECURE = PUSHER_TRUST_X_FORWARDED_PROTO or SECURE_SSL_REDIRECT
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Sent only on secure requests (Django never sends HSTS over plain HTTP).
SECURE_HSTS_SECONDS = _whole(
    "SECURE_HSTS_SECONDS", env.str("SECURE_HSTS_SECONDS", default=str(0 if DEBUG else 31536000)), 0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# The health and metrics endpoints must answer plain HTTP probes inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# Error reports (the DEBUG 500 page included) hide what a view marks as a posted secret.
DEFAULT_EXCEPTION_REPORTER_FILTER = "pusher_site.errorreports.SecretRequestReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Token report URLs hold a secret and push tokens: masked in every line (pusher_site.report).
    "filters": {"report_path": {"()": "pusher_site.logfilters.ReportPathFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["report_path"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "pika": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # Django's own defaults give "django" a console handler of its own (in DEBUG) and let it
        # propagate to ours too: every request line (runserver's access log, "Not Found: ...")
        # came out twice. One handler, ours, for all of Django's loggers.
        "django": {"handlers": [], "propagate": True},
        "django.server": {"handlers": [], "propagate": True},
    },
}
