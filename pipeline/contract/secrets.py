"""Mask values that look like credentials before anything is printed, logged or written.

A key looks secret when its name contains ``token`` (not ``tokens``, ``tokenizer`` or
``token_id``, which generation settings use), ``secret``, ``password``/``passwd``, ``api_key``,
``access_key``, ``private_key``, ``credential``, ``authorization`` or ``storage_options`` (cloud
filesystem options carry keys and secrets). A password inside a URL (``postgresql://me:pw@db``)
is masked wherever the URL appears. Structured data (plans, metrics, saved configs) is masked with
:func:`mask_secrets`; free text (log lines, Hydra overrides) with :func:`mask_text`, a safety net
for ``key=value`` and ``key: value`` pairs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_SECRET_KEY = re.compile(
    r"token(?!s|iz|_id|_type)|secret|passw(?:or)?d|api_?key|access_?key|private_?key"
    r"|credential|authorization|storage_options",
    re.I,
)
# key, separator, value: "key=value", "key: value", '"key": "value"', "key={...}"
_PAIR = re.compile(
    r"(?P<key>[A-Za-z_][\w.-]*)(?P<sep>[\"']?\s*[:=]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|\{[^{}]*\}|\[[^\[\]]*\]|[^\s,;{}\[\]()\"']+)"
)


# scheme://user:password@host -> the password
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][\w+.-]*://[^/\s:@]*:)([^@\s/]+)(@)")


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` replaced."""
    return _URL_PASSWORD.sub(rf"\1{MASK}\3", text)


def is_secret_key(name: Any) -> bool:
    """Whether a key (a dotted path is fine) names a credential-like value."""
    return bool(_SECRET_KEY.search(str(name)))


def mask_secrets(value: Any) -> Any:
    """Copy of ``value`` with every entry under a secret-looking key replaced by ``***``.

    Walks mappings, lists and tuples at any depth; a pydantic model is dumped first. ``None``
    stays ``None`` so an unset option still reads as unset.
    """
    if hasattr(value, "model_dump") and not isinstance(value, type):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {
            k: (MASK if is_secret_key(k) and v is not None else mask_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return mask_url_passwords(value)
    return value


def _mask_pair(match: re.Match[str]) -> str:
    if not is_secret_key(match["key"]):
        return match[0]
    value = match["value"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match['key']}{match['sep']}{quote}{MASK}{quote}"


def mask_text(text: str) -> str:
    """``text`` with the value of every secret-looking ``key=value``/``key: value`` masked,
    and every password in a URL."""
    return mask_url_passwords(_PAIR.sub(_mask_pair, text))


def mask_override(override: str) -> str:
    """A Hydra command-line override with its value masked if its key looks secret."""
    key, sep, value = override.partition("=")
    if not sep or not is_secret_key(key.lstrip("+~")):
        return override
    return f"{override.partition('=')[0]}={MASK}"


class MaskingFilter(logging.Filter):
    """A logging filter that masks secret-looking ``key=value`` pairs in every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def install_log_masking(logger: logging.Logger | None = None) -> None:
    """Add a :class:`MaskingFilter` to ``logger``'s handlers (default: the root logger's).

    Handler filters see records from every logger that propagates to them, so plugin loggers
    are covered too. Safe to call more than once.
    """
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())
