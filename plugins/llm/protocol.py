"""The wire format of OpenAI-compatible endpoints: request bodies from rows, and replies.

``/chat/completions`` gets ``messages`` (an optional system message, then the prompt as the
user's); ``/completions`` gets the prompt as raw text. Both carry the sampling settings that are
set (unset ones are left out, so the server's defaults apply) and ``extra_body``. With
``response_format`` the server is asked for JSON matching the schema (``{"type":
"json_schema", ...}``, as OpenAI, vLLM and SGLang take it; a server without it, such as
transformers serve, ignores it and the reply is still validated here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plugins.llm.params import OpenAIChatParams
from plugins.llm.template import PromptTemplate

PATHS = {"chat": "/chat/completions", "completions": "/completions"}


class MalformedReplyError(ValueError):
    """A 2xx answer whose body is not the endpoint's JSON (retried: proxies and gateways do it)."""


@dataclass(frozen=True)
class Reply:
    """What one request gave: the text, why it stopped, and the tokens the server counted.

    ``text`` is None when the server sent ``content: null`` (a server-side parser that failed,
    a reasoning model cut before its answer, a refusal; ``refusal`` holds the latter's text).
    """

    text: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    refusal: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The reply as a JSON object (what the journal keeps)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Reply:
        """A reply from :meth:`to_json`'s object (keys it does not know are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in names})


class RequestBuilder:
    """Request bodies for one predictor's params. ``key`` prefixes config keys in messages."""

    def __init__(self, params: OpenAIChatParams, key: str = "params") -> None:
        self.params = params
        self.path = PATHS[params.endpoint]
        self.prompt = PromptTemplate(params.prompt, f"{key}.prompt")
        self.system = (
            PromptTemplate(params.system_prompt, f"{key}.system_prompt")
            if params.system_prompt is not None
            else None
        )
        self.base = self._base()

    def _base(self) -> dict[str, Any]:
        p = self.params
        body: dict[str, Any] = dict(p.extra_body)
        body["model"] = p.model
        for name in ("max_tokens", "temperature", "top_p", "stop", "seed"):
            value = getattr(p, name)
            if value is not None:
                body[name] = value
        if p.response_format is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "row", "schema": p.response_format, "strict": True},
            }
        return body

    def require(self, columns: list[str]) -> None:
        """Raise :class:`pipeline.contract.errors.ColumnNotFoundError` for a template column not in
        ``columns`` (checked on the driver before the job starts)."""
        if self.system is not None:
            self.system.require(columns)
        self.prompt.require(columns)

    def body(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON body for one row (column -> value); template errors as in
        :meth:`PromptTemplate.render`."""
        body = dict(self.base)
        if self.params.endpoint == "completions":
            body["prompt"] = self.prompt.render(row)
            return body
        messages = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system.render(row)})
        messages.append({"role": "user", "content": self.prompt.render(row)})
        body["messages"] = messages
        return body

    def texts(self, row: Mapping[str, Any]) -> list[str]:
        """The texts of one row's request (system, then prompt): what a dry run counts."""
        texts = [self.system.render(row)] if self.system is not None else []
        return [*texts, self.prompt.render(row)]


def parse_reply(endpoint: str, payload: Any, stop: list[str] | None = None) -> Reply:
    """The :class:`Reply` in a decoded 2xx body of ``endpoint`` (chat or completions).

    A reply that ends with one of ``stop`` has it removed (OpenAI and vLLM leave it out,
    transformers serve keeps it). ``content: null`` (chat) or ``text: null`` (completions) gives
    a :class:`Reply` whose ``text`` is None: the caller decides (the client fails the row).
    Raises :class:`MalformedReplyError` when the body lacks ``choices[0]`` with its message or
    text, or the text is neither a string nor null.
    """
    refusal = None
    try:
        choice = payload["choices"][0]
        if endpoint == "chat":
            message = choice["message"]
            text = message.get("content")
            refusal = message.get("refusal")
        else:
            text = choice["text"]
    except (KeyError, IndexError, TypeError, AttributeError):
        raise MalformedReplyError(
            f"the answer has no choices[0] text: {str(payload)[:200]!r}"
        ) from None
    if text is not None and not isinstance(text, str):
        raise MalformedReplyError(f"the answer's text is a {type(text).__name__}, not a string")
    for s in stop or ():
        if text and s and text.endswith(s):
            text = text[: -len(s)]
            break
    usage = payload.get("usage") if isinstance(payload, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    return Reply(
        text=text,
        finish_reason=reason if isinstance(reason := choice.get("finish_reason"), str) else None,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        refusal=refusal if isinstance(refusal, str) and refusal else None,
    )


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
