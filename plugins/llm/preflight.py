"""Is the server there? Checked on the driver before any row is spent (needs the network).

``GET {base_url}/models`` first; if the model is not listed (servers that load models on demand list
only some), or the server has no such route, one request for one token (``max_tokens: 1``) proves
the endpoint and the model answer. Every failure is a :class:`pipeline.contract.errors.ConfigError`
(exit 2) naming the key to fix: ``base_url`` when nothing answers or the path is wrong,
``api_key_env`` when the key is refused, ``model`` when the server does not know the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.contract.errors import ConfigError
from plugins.llm.protocol import PATHS

#: Seconds for each of the (at most two) requests.
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServerCheck:
    """What the check saw: the model ids ``/models`` listed (empty if none), and whether a
    one-token request was needed and answered."""

    models: list[str] = field(default_factory=list)
    probed: bool = False


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (an API key a server may echo back) replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


def error_detail(response: Any, secret: str | None = None) -> str:
    """A server's error message from its JSON body (OpenAI, FastAPI and plain forms), or the
    start of the body; ``secret`` is masked wherever it appears."""
    try:
        body = response.json()
    except ValueError:
        return scrub(response.text[:200].strip() or response.reason_phrase, secret)
    text = str(body)[:200]
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            text = str(error)[:300]
    return scrub(text, secret)


def check_server(
    base_url: str,
    model: str,
    endpoint: str = "chat",
    api_key: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    key: str = "predictor.params",
    timeout_s: float = TIMEOUT_S,
) -> ServerCheck:
    """Raise :class:`ConfigError` unless ``base_url`` answers as an OpenAI-compatible API that
    serves ``model`` on ``endpoint`` (chat or completions); see the module docstring."""
    import httpx2

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx2.Client(timeout=timeout_s, headers=headers, trust_env=False) as http:
        try:
            response = http.get(f"{base_url}/models")
        except httpx2.TimeoutException:
            raise ConfigError(
                f"no answer from {base_url} within {timeout_s:g} s (GET /models); is the server "
                "up and the address right?",
                key=f"{key}.base_url",
            ) from None
        except httpx2.TransportError as exc:
            raise ConfigError(
                f"cannot reach {base_url}: {_reason(exc)}. Start the server or fix the address "
                "(it should end in /v1).",
                key=f"{key}.base_url",
            ) from None
        _refuse_auth(response, base_url, api_key, api_key_env, key)
        models: list[str] = []
        if response.status_code == 200:
            try:
                models = [m["id"] for m in response.json().get("data", []) if "id" in m]
            except (ValueError, AttributeError, TypeError):
                models = []
            if model in models:
                return ServerCheck(models=models)
        elif response.status_code not in (404, 405):
            raise ConfigError(
                f"GET {base_url}/models answered HTTP {response.status_code}: "
                f"{error_detail(response, api_key)}",
                key=f"{key}.base_url",
            )
        _probe(http, base_url, model, endpoint, api_key, api_key_env, key, timeout_s)
        return ServerCheck(models=models, probed=True)


def _probe(http, base_url, model, endpoint, api_key, api_key_env, key, timeout_s) -> None:
    import httpx2

    body: dict[str, Any] = {"model": model, "max_tokens": 1}
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": "ping"}]
    else:
        body["prompt"] = "ping"
    url = f"{base_url}{PATHS[endpoint]}"
    try:
        response = http.post(url, json=body, timeout=max(timeout_s, 30.0))
    except httpx2.HTTPError as exc:
        raise ConfigError(
            f"POST {url} (one token, to check the server) failed: {_reason(exc)}",
            key=f"{key}.base_url",
        ) from None
    _refuse_auth(response, base_url, api_key, api_key_env, key)
    detail = error_detail(response, api_key)
    if response.status_code == 404 and "model" not in detail.lower():
        raise ConfigError(
            f"{base_url} has no OpenAI-compatible API: GET /models and POST {PATHS[endpoint]} "
            "answered 404 Not Found. The address should be the API root, usually ending in /v1.",
            key=f"{key}.base_url",
        )
    if response.status_code in (400, 404, 422):
        raise ConfigError(
            f"{base_url} refused model {model!r} (HTTP {response.status_code}: {detail})",
            key=f"{key}.model",
        )
    if response.status_code >= 400 and response.status_code != 429:  # 429: there, and busy
        raise ConfigError(
            f"POST {url} (one token, to check the server) answered HTTP "
            f"{response.status_code}: {detail}",
            key=f"{key}.base_url",
        )


def _refuse_auth(response, base_url: str, api_key, api_key_env: str, key: str) -> None:
    if response.status_code in (401, 403):
        given = f"the key in ${api_key_env}" if api_key else f"no key (${api_key_env} is unset)"
        raise ConfigError(
            f"{base_url} refused {given}: HTTP {response.status_code} "
            f"{error_detail(response, api_key)}",
            key=f"{key}.api_key_env",
        )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused (nothing listens there)"
    return text.splitlines()[0][:200]
