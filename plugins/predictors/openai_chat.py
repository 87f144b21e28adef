"""Generation through an OpenAI-compatible endpoint (vLLM, SGLang, OpenAI, transformers serve).

Each map batch (a ``pyarrow.Table``) becomes one request per row, sent concurrently by
:class:`plugins.llm.client.BlockingClient` (at most ``max_concurrent_requests`` in flight per
worker), under the job-wide rate limits of a :class:`~plugins.llm.limits.SharedLimiter` actor
that the core makes once per job (``job_services``) and hands to every worker. Replies become
the ``output`` column (and, as asked, token and finish-reason columns and the properties of
``response_format``), in input order.

An actor works on several map batches at once (:meth:`OpenAIChat.calls_per_actor`), all
feeding the one request pool, so its slots stay busy while one batch waits for its slowest
replies. Every answer goes into the stage's journal in the job's staging area
(``keeps_journal``) under a digest of its request before its row is handed on: a resumed job
or a restarted actor sends only the requests that never got an answer, and with ``dedupe``
(the default) identical requests are sent once per job.

A row that still fails after its retries (or whose reply has no content, does not match
``response_format``, or was cut at ``max_tokens`` under ``on_truncated: fail``) makes the batch
raise, after every other row of it has been answered; the core's guard then
applies ``stage.on_error``: ``fail`` stops the job naming the stage, ``skip`` and
``dead_letter`` call the stage again row by row, and those calls are answered from what the
first call got (:class:`~plugins.llm.replay.Replay`), so no row is ever requested twice.

Before a real run the driver checks the server (``preflight``: exit 2 naming
``predictor.params.base_url`` when nothing answers); a dry run estimates the job's prompt
tokens and cost from the source's first rows (``estimate``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pipeline.contract.errors import ColumnNotFoundError, DataError
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Predictor
from plugins.batches import added, to_arrow, with_column
from plugins.llm.params import ApiKey, OpenAIChatParams
from plugins.models import check_model_folder

#: Config key of the params, relative to the stage (the core makes it absolute).
KEY = "params"
#: The absolute key, for messages that are not config errors (a row's error, the summary): a
#: predictor's block is always ``predictor``.
PARAMS_KEY = "predictor.params"
TOKENIZER = "params.tokenizer"


def _structured_types(params: OpenAIChatParams) -> dict[str, Any]:
    if params.response_format is None:
        return {}
    from plugins.llm.structured import StructuredOutput

    return StructuredOutput(params.response_format).arrow_types()


class RowsFailedError(RuntimeError):
    """Some rows of a batch failed for good (the guard decides: fail, skip or dead_letter)."""


class OpenAIChat(Predictor):
    """Send each row as a prompt to an OpenAI-compatible endpoint; many requests at once."""

    Params = OpenAIChatParams
    libraries = ("httpx2",)
    extras = {"llm": ("httpx2", "jsonschema")}
    # One actor per pool: it holds max_concurrent_requests in flight by itself. Batches of 128
    # rows keep 16 requests busy for several rounds before a batch's last replies hold it up.
    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="actors", concurrency=1, batch_size=128, batch_format="pyarrow"
    )
    keeps_journal: ClassVar[bool] = True
    plugin_api: ClassVar[str] = "1.3"

    def __init__(self, params: OpenAIChatParams, services: dict[str, Any] | None = None) -> None:
        from dataclasses import replace

        from plugins.llm.client import BlockingClient, ClientSettings
        from plugins.llm.limits import make_limiter
        from plugins.llm.protocol import RequestBuilder
        from plugins.llm.replay import Replay

        super().__init__(params)
        services = services or {}
        self.builder = RequestBuilder(params, key=KEY)
        limiter = services.get("limiter") or make_limiter(
            params.requests_per_minute, params.tokens_per_minute
        )
        settings = ClientSettings.from_params(params, key=PARAMS_KEY)
        key = services.get("api_key")
        if isinstance(key, ApiKey):  # the driver's, which the preflight checked
            settings = replace(settings, api_key=key.value)
        self.client = BlockingClient(settings, limiter, journal=services.get("journal"))
        self.replay: Replay = Replay()
        self.types = _structured_types(params)
        self.fields = params.fields

    # -- planning, on the driver -------------------------------------------------------------

    @classmethod
    def output_schema(cls, params: OpenAIChatParams, schema):
        import pyarrow as pa

        from plugins.llm.protocol import RequestBuilder

        RequestBuilder(params, key=KEY).require(list(schema.names))
        if params.tokenizer is not None and check_model_folder(params.tokenizer, TOKENIZER) is None:
            raise DataError(
                f"tokenizer {params.tokenizer!r} is not a local folder: the dry run counts tokens "
                "with a local model folder's tokenizer (nothing is fetched from a model hub)",
                key=TOKENIZER,
            )
        columns: dict[str, Any] = {params.output_column: pa.string()}
        for name in (params.prompt_tokens_column, params.completion_tokens_column):
            if name is not None:
                columns[name] = pa.int64()
        if params.finish_reason_column is not None:
            columns[params.finish_reason_column] = pa.string()
        columns.update(_structured_types(params))
        return added(schema, **columns)

    @classmethod
    def preflight(cls, params: OpenAIChatParams) -> None:
        """The server answers for the model (:func:`plugins.llm.preflight.check_server`)."""
        from plugins.llm.preflight import check_server

        check_server(
            params.base_url,
            params.model,
            params.endpoint,
            api_key=params.api_key(),
            api_key_env=params.api_key_env,
            key=KEY,
        )

    @classmethod
    def calls_per_actor(cls, params: OpenAIChatParams, batch_size: int) -> int:
        """Batches one actor works on at once: enough that 24 times ``max_concurrent_requests``
        rows are in the actor, at least 2, at most 64 (threads of the actor).

        A batch spends most of its time waiting for its slowest replies: with log-normal reply
        times (median 0.4 s, up to 7 s) 128 rows over 32 slots are sent in about 2.4 s, then
        the batch waits up to 5 s more for its last ones. Only batches still sending keep the
        slots busy, so an actor needs several times more batches in hand than the slots can
        take at once: measured with ``benchmarks/llm.py --latency`` (4,000 prompts, 32 slots),
        8 times the slots in rows kept the job at 0.76x the plain asyncio loop's speed with
        batches of 128, 0.94x with batches of 32 (docs/llm.md, "Performance").
        """
        return max(2, min(64, -(-24 * params.max_concurrent_requests // batch_size)))

    @classmethod
    def job_services(cls, params: OpenAIChatParams) -> dict[str, Any]:
        """The job-wide rate limiter (a Ray actor; none without limits) and the driver's key."""
        import uuid

        from plugins.llm.limits import SharedLimiter, limiter_name

        services: dict[str, Any] = {}
        rpm, tpm = params.requests_per_minute, params.tokens_per_minute
        if rpm or tpm:
            name = limiter_name(uuid.uuid4().hex, params.base_url, params.model, rpm, tpm)
            services["limiter"] = SharedLimiter.create(name, rpm, tpm)
        key = params.api_key()
        if key:
            services["api_key"] = ApiKey(key)
        return services

    @classmethod
    def estimate(cls, params: OpenAIChatParams, rows, total_rows: int | None) -> str | None:
        """Requests, prompt tokens (the model's tokenizer where it is a local folder, else about
        4 characters a token), the completion bound and their cost, for the whole input."""
        from plugins.llm.estimate import TokenCounter, estimate
        from plugins.llm.protocol import RequestBuilder

        builder = RequestBuilder(params, key=KEY)
        try:
            builder.require(list(rows.column_names))
        except ColumnNotFoundError as exc:
            return f"not estimated: {exc.message} (a column an earlier stage makes?)"
        texts = []
        for row in rows.select(params.fields).to_pylist():
            try:
                texts.append(builder.texts(row))
            except DataError:  # a null in this row: the run sets it aside or fails
                continue
        counter = TokenCounter(params.tokenizer or params.model, params.endpoint == "chat")
        price = params.price_per_million_tokens
        forecast = estimate(texts, counter, params.max_tokens, price)
        if total_rows is not None and rows.num_rows:
            forecast = forecast.scaled(round(total_rows * len(texts) / rows.num_rows), price)
        return forecast.describe()

    @classmethod
    def summary(cls, params: OpenAIChatParams, counters: dict[str, float], seconds: float) -> str:
        from plugins.llm.report import job_summary

        return job_summary(
            counters,
            seconds,
            params.price_per_million_tokens,
            max_tokens=params.max_tokens,
            key=PARAMS_KEY,
        )

    # -- in the worker -----------------------------------------------------------------------

    def counters(self) -> dict[str, float]:
        """:data:`plugins.llm.client.COUNTERS` since the last call (requests, retries by kind,
        rows answered, failed, without content and cut at max_tokens, tokens, throttled seconds);
        ``cost`` too when ``price_per_million_tokens`` is set."""
        from plugins.llm.estimate import cost

        counts = self.client.counters.take()
        spent = cost(
            counts["prompt_tokens"],
            counts["completion_tokens"],
            self.params.price_per_million_tokens,
        )
        if spent is not None:
            counts["cost"] = spent
        return counts

    def __call__(self, batch):
        """A ``pyarrow.Table`` -> the same rows with the output columns; raises
        :class:`RowsFailedError` (or a row's own error, for a batch of one row) when a row
        failed for good, after every other row got its answer."""
        from plugins.llm.client import RowResult

        batch = to_arrow(batch)  # any batch_format works; pyarrow (the default) is free
        rows = batch.select(self.fields).to_pylist() if self.fields else [{}] * batch.num_rows
        results: list[RowResult | None] = [None] * len(rows)
        bodies: list[dict[str, Any] | None] = [None] * len(rows)
        for i, row in enumerate(rows):
            try:
                bodies[i] = self.builder.body(row)
            except ColumnNotFoundError:
                raise
            except DataError as exc:  # this row's value (a null), not the job's
                results[i] = RowResult(error=exc)
                continue
            if len(self.replay):
                results[i] = self.replay.take(bodies[i])
        ask = [i for i, r in enumerate(results) if r is None]
        answered = self.client.complete([bodies[i] for i in ask]) if ask else []
        for i, result in zip(ask, answered, strict=True):
            results[i] = result
        failed = [i for i, r in enumerate(results) if not r.ok]
        if failed:
            # The guard asks again row by row: keep what this call got, so it sends nothing.
            self.replay.keep([bodies[i] for i in ask], answered)
            first = results[failed[0]].error
            if len(rows) == 1:
                raise first
            raise RowsFailedError(
                f"{len(failed)} of {len(rows)} rows failed; the first (row {failed[0]}): "
                f"{type(first).__name__}: {first}"
            )
        return self._table(batch, results)

    def _table(self, batch, results: list) -> Any:
        import pyarrow as pa

        p = self.params
        table = with_column(
            batch, p.output_column, pa.array([r.text for r in results], pa.string())
        )
        for name, attr in (
            (p.prompt_tokens_column, "prompt_tokens"),
            (p.completion_tokens_column, "completion_tokens"),
        ):
            if name is not None:
                values = [getattr(r, attr) for r in results]
                table = with_column(table, name, pa.array(values, pa.int64()))
        if p.finish_reason_column is not None:
            values = [r.finish_reason for r in results]
            table = with_column(table, p.finish_reason_column, pa.array(values, pa.string()))
        for name, kind in self.types.items():
            values = [(r.columns or {}).get(name) for r in results]
            table = with_column(table, name, pa.array(values, kind))
        return table
