"""Deprecated in bulkinfer 0.2: the plugin contract moved to :mod:`pipeline.contract`.

Kept so that plugins written against the earlier module layout keep working; new code imports
from :mod:`pipeline.contract` (see docs/plugins.md, "Changes to the plugin contract").
"""

from __future__ import annotations

import warnings

from pipeline.contract import *  # noqa: F403

warnings.warn(
    "pipeline.interfaces is deprecated: import from pipeline.contract",
    DeprecationWarning,
    stacklevel=2,
)
