"""The test project's URLs: Django's admin, with graphile-worker's pages in it."""

from __future__ import annotations

from django.contrib import admin  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]

urlpatterns = [path("admin/", admin.site.urls)]
