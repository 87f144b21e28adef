"""The ``openai_chat`` predictor's params: validated before Ray starts, never holding a key."""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.contract.plugin import PluginParams
from plugins.llm.template import template_fields

#: Request fields the params set themselves; ``extra_body`` may not set them.
OWN_FIELDS = {
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "response_format",
    "stream",
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ApiKey:
    """An API key on its way from the driver's environment to the workers: never printed.

    ``token`` tells two keys apart without showing either (a fresh one per job)."""

    def __init__(self, value: str, token: str | None = None) -> None:
        import uuid

        self.value = value
        self.token = token or uuid.uuid4().hex[:12]

    def __repr__(self) -> str:
        return f"ApiKey(***, {self.token})"

    __str__ = __repr__

    def __reduce__(self):
        return (ApiKey, (self.value, self.token))


class Price(PluginParams):
    """Dollars (or any currency) per million tokens."""

    input: float = Field(default=0.0, ge=0, description="Per million prompt tokens.")
    output: float = Field(default=0.0, ge=0, description="Per million completion tokens.")


class OpenAIChatParams(PluginParams):
    base_url: str = Field(
        description="The API root of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 "
        "(vLLM, SGLang, TGI, llama.cpp, transformers serve) or https://api.openai.com/v1."
    )
    model: str = Field(description="The model name the server knows (its `model` field).")
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Name of the environment variable holding the API key (sent as a Bearer "
        "token). The key itself never goes into a config; unset: no key is sent.",
    )
    prompt: str = Field(
        default="{text}",
        description="The user message: a template over the row's columns, e.g. "
        "'Summarize: {text}' ({{ and }} are literal braces).",
    )
    system_prompt: str | None = Field(
        default=None, description="A system message (a template too); chat endpoint only."
    )
    endpoint: Literal["chat", "completions"] = Field(
        default="chat",
        description="chat: /chat/completions with the prompt as a user message; completions: "
        "/completions with the prompt as raw text (base models).",
    )
    max_tokens: int | None = Field(
        default=256,
        gt=0,
        description="Most tokens generated per row (null: the server's). A reply cut there "
        "(finish_reason=length) is counted in the summary; see on_truncated.",
    )
    on_truncated: Literal["keep", "fail"] = Field(
        default="keep",
        description="A reply cut at max_tokens (finish_reason=length): keep (its text as it is, "
        "counted as rows_truncated and named in the summary) or fail (its row fails, naming "
        "finish_reason=length and max_tokens, and goes through stage.on_error).",
    )
    temperature: float | None = Field(default=None, ge=0, description="Sampling temperature.")
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling mass.")
    stop: list[str] | None = Field(
        default=None,
        description="Strings that end generation; the reply never ends with one (a server that "
        "keeps the stop string, as transformers serve does, has it removed).",
    )
    seed: int | None = Field(default=None, description="Sampling seed, where the server has one.")
    response_format: dict[str, Any] | None = Field(
        default=None,
        description="A JSON schema of an object: the server is asked for JSON that matches it, "
        "the reply is validated and each top-level property becomes a column; a reply that does "
        "not match fails its row (see stage.on_error).",
    )
    output_column: str = Field(default="output", description="Column for the generated text.")
    prompt_tokens_column: str | None = Field(
        default=None, description="Column for each row's prompt tokens (null: none)."
    )
    completion_tokens_column: str | None = Field(
        default=None, description="Column for each row's completion tokens (null: none)."
    )
    finish_reason_column: str | None = Field(
        default=None,
        description="Column (string) for each row's finish_reason as the server sent it: stop "
        "(the model ended or hit a stop string), length (cut at max_tokens), content_filter, ...; "
        "null where the server sends none (null param: no column).",
    )
    max_concurrent_requests: int = Field(
        default=16,
        gt=0,
        le=4096,
        description="Requests in flight at once in each worker, across map batches (a worker "
        "works on several batches at once to keep them all busy).",
    )
    dedupe: bool = Field(
        default=True,
        description="Send identical requests once per job and give every row that asks the "
        "same answer (the summary says how many requests it saved); false: each row gets its "
        "own request (sampling with temperature > 0).",
    )
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="Most requests per minute for the whole job, all workers."
    )
    tokens_per_minute: float | None = Field(
        default=None,
        gt=0,
        description="Most tokens (prompt + max_tokens, settled to the real usage) per minute "
        "for the whole job.",
    )
    max_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of a request after 429, 5xx, a timeout, a dropped connection or a "
        "malformed reply (exponential backoff with jitter, honouring Retry-After).",
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Longest wait for one reply.")
    price_per_million_tokens: Price | None = Field(
        default=None, description="{input, output} prices, for the job's cost and dry-run estimate."
    )
    tokenizer: str | None = Field(
        default=None,
        description="A local model folder whose tokenizer counts the prompt tokens of a dry "
        "run (null: `model` when that is a local folder, else about 4 characters per token).",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="More request fields for a server's own options (e.g. top_k for vLLM).",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        url = url.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"{url!r} is not an http(s) URL, e.g. http://127.0.0.1:8000/v1")
        return url

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str) -> str:
        if not _ENV_NAME.match(name):
            raise ValueError(
                f"{name!r} is not an environment variable name; give the variable's NAME, "
                "never the key itself"
            )
        return name

    @field_validator("prompt", "system_prompt")
    @classmethod
    def _template(cls, template: str | None) -> str | None:
        if template is not None:
            template_fields(template)
        return template

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, stop: Any) -> Any:
        return [stop] if isinstance(stop, str) else stop

    @field_validator("extra_body", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("response_format")
    @classmethod
    def _schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            from plugins.llm.structured import check_schema

            check_schema(schema)
        return schema

    @model_validator(mode="after")
    def _consistent(self) -> OpenAIChatParams:
        if self.system_prompt is not None and self.endpoint != "chat":
            raise ValueError("system_prompt needs endpoint: chat (completions has no messages)")
        clash = sorted(OWN_FIELDS & set(self.extra_body))
        if clash:
            raise ValueError(f"extra_body must not set {', '.join(clash)}: use params.{clash[0]}")
        outputs = [
            self.output_column,
            self.prompt_tokens_column,
            self.completion_tokens_column,
            self.finish_reason_column,
        ]
        outputs += list((self.response_format or {}).get("properties", {}))
        named = [c for c in outputs if c is not None]
        twice = sorted({c for c in named if named.count(c) > 1})
        if twice:
            raise ValueError(
                f"output column {twice[0]!r} is named twice (output_column, the token columns, "
                "finish_reason_column and response_format's properties must all differ)"
            )
        return self

    def api_key(self) -> str | None:
        """The key from the environment (``api_key_env``), or None when it is unset or empty."""
        return os.environ.get(self.api_key_env) or None

    @property
    def fields(self) -> list[str]:
        """Columns the templates read, in order."""
        names = template_fields(self.system_prompt or "") + template_fields(self.prompt)
        return list(dict.fromkeys(names))
