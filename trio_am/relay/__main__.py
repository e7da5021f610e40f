"""``python -m trio_am.relay`` is ``trio-am-relay``."""

import sys

from .cli import main

sys.exit(main())
