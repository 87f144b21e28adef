"""Deprecated in bulkinfer 0.2: Arrow type names moved to :mod:`pipeline.contract.schema`.

Kept so that plugins written against the earlier module layout keep working; new code imports
from :mod:`pipeline.contract` (see docs/plugins.md, "Changes to the plugin contract").
"""

from __future__ import annotations

import warnings

from pipeline.contract.schema import *  # noqa: F403

warnings.warn(
    "pipeline.schema is deprecated: import from pipeline.contract.schema",
    DeprecationWarning,
    stacklevel=2,
)
