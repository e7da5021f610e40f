"""Tests of trio_am.history (tools.md §3.2)."""
