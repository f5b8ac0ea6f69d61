"""The export tests share the export of the trained digits model: the `exported` fixture of tests/conftest.py (the
prediction tests use it too)."""
