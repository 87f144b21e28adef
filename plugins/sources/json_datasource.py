"""The Ray Data datasource of the JSON lines source (imported only when a job reads)."""

from __future__ import annotations

from typing import Any

from ray.data.datasource import FileBasedDatasource

from plugins.sources.json_lines import read_json_lines


class JsonLinesDatasource(FileBasedDatasource):
    """Each file read by :func:`~plugins.sources.json_lines.read_json_lines` with the job's
    schema (``schema``) and the user's declared columns (``declared``)."""

    _FILE_EXTENSIONS = ["json", "jsonl"]

    def __init__(self, paths: Any, *, schema: Any, declared: Any, **kwargs: Any) -> None:
        super().__init__(paths, **kwargs)
        self.arrow_schema = schema
        self.declared = declared

    def _read_stream(self, f: Any, path: str):
        data = f.read_buffer().to_pybytes()
        yield read_json_lines(data, path, self.arrow_schema, self.declared)
