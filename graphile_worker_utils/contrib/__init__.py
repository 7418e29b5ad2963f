"""Integrations with web frameworks; nothing in the core imports this package."""
