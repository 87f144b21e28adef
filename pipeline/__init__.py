"""bulkinfer: declarative offline batch inference on Ray Data.

The core lives in this package; built-in plugins live in ``plugins`` and are registered through
entry points exactly like third-party ones.
"""

from __future__ import annotations

__version__ = "0.2.0"
