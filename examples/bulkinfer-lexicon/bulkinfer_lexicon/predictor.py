"""A bulkinfer predictor that scores sentiment with word lists: no model, no download.

The plugin contract in brief: a ``Params`` pydantic model (every field described; unknown keys are
errors), ``default_stage`` for how it runs unless the config says otherwise, ``__init__`` for the
set-up done once per worker, ``__call__`` for one batch, and ``output_schema`` (the columns and
Arrow types after the stage) so bulkinfer can refuse a config that reads a missing column, or
sends a column to a sink that cannot hold it, before any data flows.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, model_validator

from pipeline.contract import ColumnNotFoundError, PluginParams, Predictor, StageSettings

POSITIVE = (
    "good great excellent love loved lovely nice happy wonderful fantastic best amazing enjoy "
    "enjoyed pleasant beautiful perfect helpful recommend fast easy brilliant"
).split()
NEGATIVE = (
    "bad poor terrible awful hate hated worst horrible sad broken slow useless disappointing "
    "disappointed annoying ugly difficult wrong fail failed"
).split()
NEGATORS = ("not", "no", "never", "hardly")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


class LexiconParams(PluginParams):
    input_column: str = Field(default="text", description="Column holding the texts.")
    output_column: str = Field(
        default="sentiment",
        description="Column for the score in [-1, 1]: (positive - negative) / matched words.",
    )
    label_column: str | None = Field(
        default="sentiment_label",
        description="Column for 'positive', 'negative' or 'neutral'; null: no label column.",
    )
    positive: list[str] = Field(
        default_factory=lambda: list(POSITIVE), description="Words that count as positive."
    )
    negative: list[str] = Field(
        default_factory=lambda: list(NEGATIVE), description="Words that count as negative."
    )
    negate: bool = Field(
        default=True,
        description="Flip a word's polarity after not/no/never/hardly or a word ending in n't.",
    )
    threshold: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Scores above it are 'positive', below minus it 'negative', else 'neutral'.",
    )

    @model_validator(mode="after")
    def _disjoint(self) -> LexiconParams:
        both = sorted({w.lower() for w in self.positive} & {w.lower() for w in self.negative})
        if both:
            raise ValueError(f"words in both positive and negative: {', '.join(both)}")
        return self


def score(text: str, positive: set[str], negative: set[str], negate: bool) -> float:
    """(positive - negative) / matched for one text; 0.0 when no word matches."""
    pos = neg = 0
    flip = False
    for word in _WORD.findall(text.lower()):
        polarity = 1 if word in positive else -1 if word in negative else 0
        if flip:
            polarity = -polarity
        pos += polarity > 0
        neg += polarity < 0
        flip = negate and (word in NEGATORS or word.endswith("n't"))
    matched = pos + neg
    return (pos - neg) / matched if matched else 0.0


class LexiconSentiment(Predictor):
    """Score the sentiment of a text column by counting positive and negative words."""

    Params = LexiconParams
    # The plugin contract version this class is built for (pipeline.contract.PLUGIN_API).
    plugin_api: ClassVar[str] = "1.1"
    # No model to keep loaded, so stateless tasks (not an actor pool) and pandas batches.
    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="tasks", batch_size=512, batch_format="pandas"
    )

    def __init__(self, params: LexiconParams) -> None:
        super().__init__(params)
        self.positive = {w.lower() for w in params.positive}
        self.negative = {w.lower() for w in params.negative}

    @classmethod
    def output_schema(cls, params: LexiconParams, schema: Any) -> Any:
        """The input columns, then the score (float32) and the label (string) if asked."""
        import pyarrow as pa

        if params.input_column not in schema.names:
            raise ColumnNotFoundError.for_column(
                params.input_column, list(schema.names), key="params.input_column"
            )
        added = [pa.field(params.output_column, pa.float32())]
        if params.label_column:
            added.append(pa.field(params.label_column, pa.string()))
        names = {f.name for f in added}
        return pa.schema([f for f in schema if f.name not in names] + added)

    def __call__(self, batch: Any) -> Any:
        """Add the score (and label) columns to a batch (pandas, numpy, or pyarrow)."""
        import numpy as np

        if type(batch).__name__ == "Table":  # pyarrow: convert rather than refuse
            batch = batch.to_pandas()
        column = self.params.input_column
        if column not in batch:
            raise ColumnNotFoundError.for_column(
                column, list(batch.keys()), key="predictor.params.input_column"
            )
        scores = np.array(
            [
                score(str(text), self.positive, self.negative, self.params.negate)
                for text in batch[column]
            ],
            dtype=np.float32,
        )
        batch[self.params.output_column] = scores
        if self.params.label_column:
            t = self.params.threshold
            labels = np.where(scores > t, "positive", np.where(scores < -t, "negative", "neutral"))
            batch[self.params.label_column] = labels
        return batch
