"""JSON lines files compressed as their names say (``.jsonl.gz``, ``.json.zst``, ...: the
extensions the JSON source lists, as Ray Data's read_json does) are decompressed as they are
read: the schema from the head of the first file, the rows in each read task; a file that does
not decompress is refused naming it."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.contract.errors import DataError
from plugins.sources.json_lines import JsonParams, JsonSource

LINES = b"".join(b'{"id": %d, "text": "sentence %d"}\n' % (i, i) for i in range(200))


def rows_of(path: Path) -> list[dict]:
    source, params = JsonSource(), JsonParams(path=str(path))
    assert source.schema(params) == pa.schema([("id", pa.int64()), ("text", pa.string())])
    (unit,) = source.units(params)
    return [row for table in source.read_unit(params, unit) for row in table.to_pylist()]


@pytest.mark.parametrize(("suffix", "codec"), [(".gz", "gzip"), (".zst", "zstd")])
def test_a_compressed_file_reads_as_its_text(tmp_path, suffix, codec):
    path = tmp_path / f"in.jsonl{suffix}"
    with pa.CompressedOutputStream(str(path), codec) as out:
        out.write(LINES)
    assert rows_of(path) == [{"id": i, "text": f"sentence {i}"} for i in range(200)]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (lambda: gzip.compress(LINES)[:600], "Truncated compressed stream"),
        (lambda: LINES, "incorrect header check"),  # not gzip at all
    ],
    ids=["truncated", "not-gzip"],
)
def test_a_file_that_does_not_decompress_is_refused_naming_it(tmp_path, content, says):
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(content())
    with pytest.raises(DataError) as caught:
        rows_of(path)
    assert caught.value.key == "source.params.path"
    assert f"cannot read input file {path}" in caught.value.message
    assert says in caught.value.message
