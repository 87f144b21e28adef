"""Deprecated in bulkinfer 0.2: bounded calls to remote services moved to
:mod:`pipeline.contract.reach`.

Kept so that plugins written against the earlier module layout keep working; new code imports
from :mod:`pipeline.contract` (see docs/plugins.md, "Changes to the plugin contract").
"""

from __future__ import annotations

import warnings

from pipeline.contract.reach import *  # noqa: F403

warnings.warn(
    "pipeline.reach is deprecated: import from pipeline.contract.reach",
    DeprecationWarning,
    stacklevel=2,
)
