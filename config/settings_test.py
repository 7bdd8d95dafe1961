"""Test settings: the production settings with throwaway keys."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-long-enough-for-the-check")
os.environ.setdefault("AUDIT_HMAC_KEY", "test-only-audit-key-long-enough-for-the-check")
os.environ.setdefault("SECURE_SSL_REDIRECT", "False")

from config.settings import *  # noqa: E402,F403
from config.settings import STORAGES  # noqa: E402

STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not shared-cache memory: threads racing in a test then wait for SQLite's write
    # lock (its busy timeout) instead of failing at once with "database table is locked".
    # TEST_DB_FILE lets two runs in one checkout keep apart.
    name = os.environ.get("TEST_DB_FILE", ".test-db.sqlite3")
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / name)}  # noqa: F405

# Tasks run at once, in the process that enqueues them; the worker tests start a real
# `qcluster` process with the settings of the main configuration instead.
Q_CLUSTER = {**Q_CLUSTER, "sync": os.environ.get("Q_CLUSTER_SYNC", "1") == "1"}  # noqa: F405
