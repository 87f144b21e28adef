"""Prompt tokens and cost before any request: for dry runs and the rate limiter's reservations.

Counting uses the model's own tokenizer when one is in a local folder (``params.tokenizer``, or
``params.model`` when that is a folder): with a chat template, the rendered chat is counted as
the server would. Otherwise the count is approximate: **one token per 4 characters** (rounded
up) of each message, plus 4 tokens per chat message for the role markers, OpenAI's rule of thumb
for English text; expect up to about +-30 % on other languages and on code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CHARS_PER_TOKEN = 4
CHAT_MESSAGE_OVERHEAD = 4


def approx_tokens(texts: Sequence[str], chat: bool) -> int:
    """The approximation: ``ceil(len/4)`` per text, plus 4 per message for chat."""
    tokens = sum(math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts)
    return tokens + (CHAT_MESSAGE_OVERHEAD * len(texts) if chat else 0)


class TokenCounter:
    """Counts one request's prompt tokens. ``folder``: a local model folder, or None."""

    def __init__(self, folder: str | None, chat: bool) -> None:
        self.chat = chat
        self.tokenizer = None
        if folder is not None and os.path.isdir(os.path.expanduser(folder)):
            from transformers import AutoTokenizer

            # A local folder: nothing is looked up on a model hub for it.
            self.tokenizer = AutoTokenizer.from_pretrained(
                os.path.expanduser(folder), local_files_only=True
            )

    @property
    def method(self) -> str:
        """How counts are made, for the dry-run report."""
        if self.tokenizer is None:
            return f"approximate: 1 token per {CHARS_PER_TOKEN} characters"
        return f"the tokenizer of {self.tokenizer.name_or_path}"

    def count(self, texts: Sequence[str]) -> int:
        """Prompt tokens of one request whose messages are ``texts`` (system first, then
        user) for chat, or whose prompt is ``texts[0]`` for completions."""
        tok = self.tokenizer
        if tok is None:
            return approx_tokens(texts, self.chat)
        if self.chat and getattr(tok, "chat_template", None):
            roles = ["system", "user"][-len(texts) :] if len(texts) <= 2 else ["user"] * len(texts)
            messages = [{"role": r, "content": t} for r, t in zip(roles, texts, strict=True)]
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            return len(ids)
        return sum(len(tok(t, add_special_tokens=True)["input_ids"]) for t in texts)


@dataclass(frozen=True)
class Estimate:
    """A dry run's forecast for ``rows`` rows."""

    rows: int
    prompt_tokens: int
    #: Upper bound: every row writes ``max_tokens`` (None when max_tokens is unset).
    max_completion_tokens: int | None
    method: str
    #: Cost of the prompts, and of the whole job at the completion bound (None: no prices).
    prompt_cost: float | None
    max_cost: float | None

    def scaled(self, rows: int, price) -> Estimate:
        """The same forecast for ``rows`` rows at this one's tokens per row (a preview of the
        input scaled to the whole of it); ``price`` as for :func:`estimate`."""
        if self.rows == 0 or rows == self.rows:
            return self
        factor = rows / self.rows
        prompt = round(self.prompt_tokens * factor)
        completion = (
            None
            if self.max_completion_tokens is None
            else round(self.max_completion_tokens * factor)
        )
        return Estimate(
            rows=rows,
            prompt_tokens=prompt,
            max_completion_tokens=completion,
            method=f"{self.method}; {self.rows:,} rows counted, scaled to {rows:,}",
            prompt_cost=cost(prompt, 0, price),
            max_cost=None if completion is None else cost(prompt, completion, price),
        )

    def describe(self) -> str:
        """One line for the dry-run report."""
        text = f"{self.rows:,} requests, about {self.prompt_tokens:,} prompt tokens ({self.method})"
        if self.max_completion_tokens is not None:
            text += f", at most {self.max_completion_tokens:,} completion tokens"
        if self.prompt_cost is not None:
            text += f"; cost: prompts {self.prompt_cost:.4g}"
            if self.max_cost is not None:
                text += f", at most {self.max_cost:.4g} in all"
        return text


def cost(prompt_tokens: float, completion_tokens: float, price) -> float | None:
    """Cost at ``price`` (with ``input``/``output`` per million tokens), or None without."""
    if price is None:
        return None
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1e6


def estimate(
    requests: Iterable[Sequence[str]], counter: TokenCounter, max_tokens: int | None, price
) -> Estimate:
    """Forecast for the requests' texts (one sequence of message texts per row)."""
    rows = 0
    prompt = 0
    for texts in requests:
        rows += 1
        prompt += counter.count(texts)
    completion = None if max_tokens is None else rows * max_tokens
    return Estimate(
        rows=rows,
        prompt_tokens=prompt,
        max_completion_tokens=completion,
        method=counter.method,
        prompt_cost=cost(prompt, 0, price),
        max_cost=None if completion is None else cost(prompt, completion, price),
    )
