"""``python -m trio_am.cli``: the same as ``trio-am``."""

from __future__ import annotations

import sys

from trio_am.cli import main

if __name__ == "__main__":
    sys.exit(main())
