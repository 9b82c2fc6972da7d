"""Loaded with `-p` before pytest-django reads settings: the test process's environment.

Production-shaped settings (DEBUG off) with throwaway secrets, so tests run the code paths
production runs. DATABASE_URL is left to the caller (.ci/run points it at PostgreSQL).
"""

import os

os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("FIELD_ENCRYPTION_KEY", "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdCE=")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("PUSHER_DATA_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "test"))
