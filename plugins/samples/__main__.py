"""``python -m plugins.samples``: the same program as ``bulkinfer-samples``."""

import sys

from plugins.samples.cli import main

sys.exit(main())
