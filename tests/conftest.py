"""Shared pytest configuration for the trio_am test suite."""

from __future__ import annotations

import os

from hypothesis import settings

# ---------------------------------------------------------------------------------------------
# Hypothesis profiles
#
# `ci` is reproducible (derandomized) and a bit deeper; `dev` is quicker. CI sets CI=true.
# Pick one by hand with `pytest --hypothesis-profile=dev`.
# ---------------------------------------------------------------------------------------------

settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
