"""Deprecated in bulkinfer 0.2: the settings models moved to :mod:`pipeline.contract.settings`.

Kept so that plugins written against the earlier module layout keep working; new code imports
from :mod:`pipeline.contract` (see docs/plugins.md, "Changes to the plugin contract").
"""

from __future__ import annotations

import warnings

from pipeline.contract.settings import *  # noqa: F403

warnings.warn(
    "pipeline.settings is deprecated: import from pipeline.contract.settings",
    DeprecationWarning,
    stacklevel=2,
)
