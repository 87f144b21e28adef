"""Mask values that look like credentials before anything is printed or written."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
#: "token" only as a whole name part (hf_token, access_token), not tokenizer or max_new_tokens.
_SECRET_KEY = re.compile(
    r"(^|[_-])token$|secret|password|passwd|api_?key|credential|storage_options", re.I
)


def mask_secrets(value: Any) -> Any:
    """Copy of ``value`` with every entry under a secret-looking key replaced by ``***``."""
    if isinstance(value, Mapping):
        return {
            k: (MASK if _SECRET_KEY.search(str(k)) and v is not None else mask_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    return value
