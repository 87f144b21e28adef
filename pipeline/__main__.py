"""``python -m pipeline``: the same as the ``bulkinfer`` command (:mod:`pipeline.app.main`)."""

from __future__ import annotations

import sys

from pipeline.app.main import cli

if __name__ == "__main__":
    sys.exit(cli())
