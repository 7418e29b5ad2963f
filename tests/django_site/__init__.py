"""A minimal Django project for the admin tests: settings made per test session (the database
is one the session creates), the admin at ``/admin/``."""
