"""Text files compressed as their names say (``.jsonl.gz``, ``.csv.zst``, ...; Ray Data's
readers decompress them the same way) are decompressed as they are read: the schema from the
head of the first file, the rows in each read task; a file that does not decompress is refused
naming it."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.contract.errors import DataError
from plugins.sources.csv_files import CsvParams, CsvSource
from plugins.sources.json_lines import JsonParams, JsonSource

ROWS = [{"id": i, "text": f"sentence {i}"} for i in range(200)]
TEXTS = {
    "jsonl": b"".join(b'{"id": %d, "text": "sentence %d"}\n' % (i, i) for i in range(200)),
    "csv": b"id,text\n" + b"".join(b"%d,sentence %d\n" % (i, i) for i in range(200)),
}
SOURCES = {"jsonl": (JsonSource, JsonParams), "csv": (CsvSource, CsvParams)}


def rows_of(path: Path, kind: str) -> list[dict]:
    source_class, params_class = SOURCES[kind]
    source, params = source_class(), params_class(path=str(path))
    assert source.schema(params) == pa.schema([("id", pa.int64()), ("text", pa.string())])
    (unit,) = source.units(params)
    return [row for table in source.read_unit(params, unit) for row in table.to_pylist()]


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
@pytest.mark.parametrize(("suffix", "codec"), [(".gz", "gzip"), (".zst", "zstd")])
def test_a_compressed_file_reads_as_its_text(tmp_path, kind, suffix, codec):
    path = tmp_path / f"in.{kind}{suffix}"
    with pa.CompressedOutputStream(str(path), codec) as out:
        out.write(TEXTS[kind])
    assert rows_of(path, kind) == ROWS


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
@pytest.mark.parametrize(
    ("content", "says"),
    [
        (lambda text: gzip.compress(text)[:600], "Truncated compressed stream"),
        (lambda text: text, "incorrect header check"),  # not gzip at all
    ],
    ids=["truncated", "not-gzip"],
)
def test_a_file_that_does_not_decompress_is_refused_naming_it(tmp_path, kind, content, says):
    path = tmp_path / f"in.{kind}.gz"
    path.write_bytes(content(TEXTS[kind]))
    with pytest.raises(DataError) as caught:
        rows_of(path, kind)
    assert caught.value.key == "source.params.path"
    assert f"cannot read input file {path}" in caught.value.message
    assert says in caught.value.message
