"""The test project's settings, as ``settings.configure()`` arguments."""

from __future__ import annotations

from typing import Any

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "graphile_worker_utils.contrib.django",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def settings(databases: dict[str, Any], schema: str) -> dict[str, Any]:
    """The keyword arguments of ``settings.configure()`` for ``databases`` (the
    ``DATABASES`` setting) and graphile-worker's ``schema``."""
    return {
        "DEBUG": False,
        "SECRET_KEY": "graphile-worker-utils tests only",
        "ALLOWED_HOSTS": ["localhost", "127.0.0.1", "testserver"],
        "DATABASES": databases,
        "INSTALLED_APPS": INSTALLED_APPS,
        "MIDDLEWARE": MIDDLEWARE,
        "ROOT_URLCONF": "tests.django_site.urls",
        "TEMPLATES": TEMPLATES,
        "STATIC_URL": "/static/",
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        "DEFAULT_AUTO_FIELD": "django.db.models.AutoField",
        # Fast hashing: the tests log users in many times.
        "PASSWORD_HASHERS": ["django.contrib.auth.hashers.MD5PasswordHasher"],
        "GRAPHILE_WORKER_SCHEMA": schema,
    }
