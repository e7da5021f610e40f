"""``python -m trio_am.dbg`` is ``trio-am-dbg``."""

import sys

from .cli import main

sys.exit(main())
