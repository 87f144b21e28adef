"""Any transformers pipeline task as a predictor, with plain output columns.

Each model batch (``stage.batch_size`` rows, sorted by token length by the core) goes to the
pipeline as one forward pass, and the nested structures pipelines return are flattened into the
values a user expects: the generated text, a label and its score, a vector, a list of entities.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from pipeline.contract.errors import ColumnNotFoundError, ConfigError, DataError
from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Predictor
from plugins.batches import added, is_token_column, require_text, to_arrow, with_column
from plugins.models import (
    check_model_folder,
    model_load_error,
    offline_env,
    pick_device,
    resolve_model,
)
from plugins.predictors import _hf_outputs as outputs

KEY = "predictor.params"

#: Set through the plugin's own params, not model_kwargs / call_kwargs.
_OWN_KEYS = {"task", "model", "device", "batch_size"}


class HfPipelineParams(PluginParams):
    task: str = Field(
        default="text-generation",
        description="A transformers pipeline task: text-generation, text-classification, "
        "token-classification, feature-extraction, fill-mask, summarization, ...",
    )
    model: str = Field(
        description="A local model folder (save_pretrained) or a hub id; both load the same way."
    )
    input_column: str = Field(
        default="text",
        description="Column with the input texts, or with token ids from a tokenize stage "
        "(text-generation, text-classification, feature-extraction).",
    )
    output_column: str = Field(default="output", description="Column for the predictions.")
    score_column: str | None = Field(
        default=None,
        description="Column for the scores of text-classification, zero-shot-classification "
        "and fill-mask (null: OUTPUT_COLUMN_score).",
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for transformers.pipeline() when the pipeline is built "
        "(dtype, revision, aggregation_strategy, model_kwargs, ...).",
    )
    call_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for every pipeline call (max_length, max_new_tokens, "
        "num_return_sequences, top_k, ...).",
    )
    pooling: outputs.Pooling = Field(
        default="mean",
        description="feature-extraction only: mean (over real tokens), first (the first "
        "token's vector) or none (a vector per token).",
    )
    attention_mask_column: str = Field(
        default="attention_mask",
        description="With pre-tokenized input: the column holding the attention mask.",
    )
    device: str | None = Field(
        default=None, description="torch device; null: the GPU Ray assigned, else the CPU."
    )

    @field_validator("model_kwargs", "call_kwargs", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("task")
    @classmethod
    def _canonical_task(cls, task: str) -> str:
        return outputs.TASK_ALIASES.get(task, task)

    @model_validator(mode="after")
    def _no_shadowed_keys(self) -> HfPipelineParams:
        for name in ("model_kwargs", "call_kwargs"):
            clash = sorted(_OWN_KEYS & set(getattr(self, name)))
            if clash:
                where = "stage" if clash[0] == "batch_size" else "params"
                raise ValueError(
                    f"{name} must not set {', '.join(clash)}: use predictor.{where}.{clash[0]}"
                )
        if self.model_kwargs.get("trust_remote_code"):
            raise ValueError(
                "model_kwargs.trust_remote_code runs code from the model's repository; a config "
                "may not turn it on. Register a predictor plugin for such a model instead."
            )
        return self

    @property
    def scores(self) -> str:
        """The score column's name."""
        return self.score_column or f"{self.output_column}_score"


class HfPipeline(Predictor):
    """Run a transformers pipeline over a text column (or pre-tokenized ids)."""

    Params = HfPipelineParams
    extras = {"transformers": ("transformers", "torch")}
    libraries: ClassVar[tuple[str, ...]] = ("transformers", "torch")
    #: ``stage.batch_size`` is the forward pass (rows per pipeline call); the planner hands the
    #: actor windows the core sorts by token length (:meth:`row_lengths`).
    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="actors", concurrency=1, batch_size=8, batch_format="pyarrow"
    )

    def __init__(self, params: HfPipelineParams) -> None:
        super().__init__(params)
        import transformers

        transformers.utils.logging.disable_progress_bar()
        device = pick_device(params.device)
        try:
            self.pipe = transformers.pipeline(
                params.task, model=resolve_model(params.model), device=device, **params.model_kwargs
            )
        except KeyError as exc:  # transformers: unknown task
            raise ConfigError(f"{exc.args[0] if exc.args else exc}", key=f"{KEY}.task") from None
        except (OSError, ValueError) as exc:
            if "task" in str(exc).lower() and "unknown" in str(exc).lower():
                raise ConfigError(str(exc).splitlines()[0], key=f"{KEY}.task") from None
            raise model_load_error(params.model, exc, f"{KEY}.model") from None
        tokenizer = getattr(self.pipe, "tokenizer", None)
        if tokenizer is not None and tokenizer.pad_token_id is None:
            # GPT-2 and friends have no pad token; batching needs one. Padding is masked out.
            tokenizer.pad_token = tokenizer.eos_token
            if getattr(self.pipe.model.generation_config, "pad_token_id", None) is None:
                self.pipe.model.generation_config.pad_token_id = tokenizer.eos_token_id
        if tokenizer is not None and params.task == "text-generation":
            tokenizer.padding_side = "left"  # decoder-only models continue from the right end

    @classmethod
    def output_schema(cls, params: HfPipelineParams, schema: Any) -> Any:
        """Output columns typed by task (see :mod:`plugins.predictors._hf_outputs`)."""
        tokens_ok = params.task in outputs.TOKEN_INPUT_TASKS
        require_text(schema, params.input_column, "params.input_column", "pipelines", tokens_ok)
        check_model_folder(params.model, "params.model")
        return added(schema, **outputs.output_types(params))

    @classmethod
    def env_vars(cls, params: HfPipelineParams) -> dict[str, str]:
        """The model hub's offline switches when ``model`` is a local folder."""
        return offline_env(params.model)

    def __call__(self, batch: Any) -> Any:
        p = self.params
        table = to_arrow(batch)
        if p.input_column not in table.column_names:
            raise ColumnNotFoundError.for_column(
                p.input_column, table.column_names, key=f"{KEY}.input_column"
            )
        if is_token_column(table, p.input_column):
            columns = outputs.from_token_ids(self.pipe, p, table)
        elif p.task == "feature-extraction":
            texts = self._texts(table)
            encoded = self.pipe.tokenizer(
                texts,
                padding=True,
                truncation=True,
                return_tensors="np",
                **p.call_kwargs.get("tokenize_kwargs", {}),
            )
            columns = outputs.features(
                self.pipe, p, encoded["input_ids"], encoded["attention_mask"]
            )
        else:
            texts = self._texts(table)
            results = self.pipe(texts, batch_size=max(1, len(texts)), **p.call_kwargs)
            if len(texts) == 1 and (not isinstance(results, list) or len(results) != 1):
                results = [results]  # some pipelines unwrap a one-element input list
            columns = outputs.convert(p, results)
        for name, values in columns.items():
            table = with_column(table, name, values)
        return table

    def row_lengths(self, batch: Any) -> list[int]:
        """Tokens per row (texts through the pipeline's tokenizer, or real token ids)."""
        p = self.params
        table = to_arrow(batch)
        tokenizer = getattr(self.pipe, "tokenizer", None)
        if p.input_column not in table.column_names or tokenizer is None:
            return [0] * table.num_rows
        if is_token_column(table, p.input_column):
            if p.attention_mask_column in table.column_names:
                return [sum(m) for m in table.column(p.attention_mask_column).to_pylist()]
            return [len(ids) for ids in table.column(p.input_column).to_pylist()]
        texts = [t if isinstance(t, str) else "" for t in table.column(p.input_column).to_pylist()]
        return [len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]]

    def _texts(self, table: Any) -> list[str]:
        column = self.params.input_column
        texts = table.column(column).to_pylist()
        if any(t is None for t in texts):
            raise DataError(f"column {column!r} has null values", key=f"{KEY}.input_column")
        return texts
