"""Deprecated in bulkinfer 0.2: the error family moved to :mod:`pipeline.contract.errors`.

Kept so that plugins written against the earlier module layout keep working; new code imports
from :mod:`pipeline.contract` (see docs/plugins.md, "Changes to the plugin contract").
"""

from __future__ import annotations

import warnings

from pipeline.contract.errors import *  # noqa: F403

warnings.warn(
    "pipeline.errors is deprecated: import from pipeline.contract.errors",
    DeprecationWarning,
    stacklevel=2,
)
