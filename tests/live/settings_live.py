"""Settings of the daphne and consumer processes the browser test starts: production's own
(DEBUG off), with the channel layer on the test Redis under this run's prefix, so the consumer's
events reach daphne and parallel runs never see each other's, and cookies over plain http."""

from pusher_site.settings import *  # noqa: F403
from pusher_site.settings import env

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [env.str("REDIS_URL")], "prefix": env.str("PUSHER_LIVE_CHANNEL_PREFIX")},
    }
}
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
