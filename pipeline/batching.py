"""Deprecated in bulkinfer 0.2: the batch-format helpers moved to :mod:`pipeline.contract.batches`.

Kept so that plugins written against the earlier module layout keep working; new code imports
from :mod:`pipeline.contract` (see docs/plugins.md, "Changes to the plugin contract").
"""

from __future__ import annotations

import warnings

from pipeline.contract.batches import *  # noqa: F403

warnings.warn(
    "pipeline.batching is deprecated: import from pipeline.contract.batches",
    DeprecationWarning,
    stacklevel=2,
)
