"""``sink=sql``'s params, importable without SQLAlchemy (the plugin reference, listing plugins,
and the message that says which extra to install all read them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.contract.plugin import PluginParams


class SqlParams(PluginParams):
    url: str = Field(
        description="SQLAlchemy database URL without a password, e.g. sqlite:///out.db or "
        "postgresql+psycopg://user@host:5432/db."
    )
    password_env: str | None = Field(
        default=None, description="Environment variable that holds the database password."
    )
    table: str = Field(description="Target table: name, or schema.name.")
    mode: Literal["error", "append", "replace"] = Field(
        default="error",
        description="error: refuse an existing table; append: insert into it (creating it "
        "when missing); replace: drop and recreate it with this run's rows, on success only.",
    )
    key_columns: list[str] = Field(
        default_factory=list,
        description="Upsert on these columns: a row whose key exists replaces it (SQLite, "
        "PostgreSQL). A table this job creates gets them as its primary key.",
    )
    json_columns: list[str] = Field(
        default_factory=list,
        description="Columns stored as JSON (lists, e.g. vectors in SQLite; structs; maps).",
    )
    batch_rows: int = Field(default=10_000, gt=0, description="Rows per INSERT batch.")
    column_types: dict[str, str] = Field(
        default_factory=dict,
        description="Arrow types to store columns as, {column: type}: required for a column "
        "declared null (e.g. XGBoost predictions: float32); casts others.",
    )

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str) -> str:
        import sqlalchemy as sa

        parsed = sa.engine.make_url(url)
        if parsed.password:
            raise ValueError(
                "the URL holds a password: remove it and name the environment variable that "
                "holds it in sink.params.password_env"
            )
        return url
