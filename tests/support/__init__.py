"""Helpers that tests run outside the pytest process (subprocess servers)."""
