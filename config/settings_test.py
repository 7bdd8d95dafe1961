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
