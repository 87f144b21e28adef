"""``sink=sql``'s params, importable without SQLAlchemy (the ``sql`` extra): the plugin is
listed, described and refused with the pip command where the extra is missing, rather than
failing to import."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from pipeline.contract.plugin import PluginParams

KEY = "sink.params"


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
    nan_as_null: bool = Field(
        default=False,
        description="Store NaN as NULL where the column cannot hold NaN (SQLite's REAL, "
        "PostgreSQL's jsonb); false: a NaN there stops the job, naming the column.",
    )
    column_types: dict[str, str] = Field(
        default_factory=dict,
        description="Arrow types to store columns as, {column: type}: required for a column "
        "declared null (a type only the model can tell); casts others.",
    )

    @field_validator("table")
    @classmethod
    def _schema_where_there_are_schemas(cls, table: str, info: ValidationInfo) -> str:
        """``name`` or ``schema.name``; a schema only where the database has them (not
        SQLite, whose ``schema.`` names an attached database, and this sink attaches none)."""
        parts = table.split(".")
        if len(parts) > 2 or not all(parts):
            raise ValueError(f"{table!r} is not a table name: give name or schema.name")
        url = info.data.get("url")
        if len(parts) == 2 and url and parts[0] != "main":
            import sqlalchemy as sa

            if sa.engine.make_url(url).get_backend_name() == "sqlite":
                raise ValueError(
                    f"SQLite has no schemas ({parts[0]!r} would name an attached database, "
                    f"and this sink attaches none): name the table alone ({parts[1]}), or "
                    "write to a database that has schemas (PostgreSQL)"
                )
        return table

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
