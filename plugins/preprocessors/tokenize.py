"""Tokenize a text column on the CPU, as its own stage before the model.

The seed's advice for expensive CPU preprocessing: with tokenizing in a separate stage, Ray Data
tokenizes batch N+1 while the model stage works on batch N. The ``hf_pipeline``,
``sentence_embedding`` and ``torch_module`` predictors take the resulting token ids as input.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from pipeline.contract.errors import DataError
from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Preprocessor
from plugins.batches import added, require_columns, require_text, to_arrow, with_column
from plugins.models import check_model_folder, model_load_error, offline_env, resolve_model


class TokenizeParams(PluginParams):
    tokenizer: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="A transformers tokenizer: a local model folder or a hub id (use the "
        "predictor's model; conf/preprocessor/tokenize.yaml does so by interpolation).",
    )
    input_column: str = Field(default="text", description="Column holding the texts.")
    max_length: int | None = Field(
        default=128, gt=0, description="Truncate to this many tokens (null: the tokenizer's limit)."
    )
    padding: Literal["longest", "max_length"] = Field(
        default="longest",
        description="longest: pad each batch to its longest row (predictors drop padding "
        "anyway); max_length: every row exactly max_length tokens (fixed-size input, e.g. for "
        "torch_module).",
    )
    add_special_tokens: bool = Field(
        default=True, description="Add the model's special tokens ([CLS], [SEP], ...)."
    )
    input_ids_column: str = Field(default="input_ids", description="Column for the token ids.")
    attention_mask_column: str = Field(
        default="attention_mask", description="Column for the attention mask (1: token, 0: pad)."
    )
    drop_input: bool = Field(
        default=False, description="Drop the text column after tokenizing (smaller blocks)."
    )


class Tokenize(Preprocessor):
    """Text -> ``input_ids`` and ``attention_mask`` (int64 lists) with a transformers tokenizer."""

    Params = TokenizeParams
    extras = {"transformers": ("transformers",)}
    libraries: ClassVar[tuple[str, ...]] = ("transformers",)
    default_stage: ClassVar[StageSettings] = StageSettings(
        batch_size=256, batch_format="pyarrow", compute="tasks"
    )

    def __init__(self, params: TokenizeParams) -> None:
        super().__init__(params)
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(params.tokenizer))
        except (OSError, ValueError) as exc:
            raise model_load_error(params.tokenizer, exc, "params.tokenizer") from None
        if self.tokenizer.pad_token_id is None:  # GPT-2 style: pad with end-of-text, masked out
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def output_schema(cls, params: TokenizeParams, schema: Any) -> Any:
        import pyarrow as pa

        require_text(schema, params.input_column, "params.input_column", "tokenizers")
        check_model_folder(params.tokenizer, "params.tokenizer")
        if params.drop_input:
            schema = schema.remove(schema.get_field_index(params.input_column))
        ids = pa.list_(pa.int64())
        return added(schema, **{params.input_ids_column: ids, params.attention_mask_column: ids})

    @classmethod
    def env_vars(cls, params: TokenizeParams) -> dict[str, str]:
        """The model hub's offline switches when ``tokenizer`` is a local folder."""
        return offline_env(params.tokenizer)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        p = self.params
        table = to_arrow(batch)
        require_columns([p.input_column], table.column_names, "params.input_column")
        texts = table.column(p.input_column).to_pylist()
        if any(t is None for t in texts):
            raise DataError(f"column {p.input_column!r} has null values", key="params.input_column")
        encoded = self.tokenizer(
            texts,
            max_length=p.max_length,
            truncation=p.max_length is not None,
            padding=p.padding,
            add_special_tokens=p.add_special_tokens,
        )
        ids = pa.array(encoded["input_ids"], pa.list_(pa.int64()))
        mask = pa.array(encoded["attention_mask"], pa.list_(pa.int64()))
        if p.drop_input:
            table = table.drop_columns([p.input_column])
        table = with_column(table, p.input_ids_column, ids)
        return with_column(table, p.attention_mask_column, mask)
