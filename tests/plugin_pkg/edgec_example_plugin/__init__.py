"""Example third-party backend for edgec (see tests/test_plugin.py)."""
