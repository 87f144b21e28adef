"""Bad input gives a clear error: the file, column or key; exit status 2; no traceback; no hang;
nothing at the output path (and no staging folder beside it).

Each case runs ``python -m pipeline`` as a user would, with a time limit. The cases run a few at
a time (each starts its own local Ray), and each is its own test in the table below.
"""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli

from pipeline.output.staging import STAGING_SUFFIX

pytestmark = pytest.mark.subprocess  # every test here runs the command line

EMBED = ["predictor.stage.batch_size=8"]


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _cases(d: Path) -> dict[str, tuple[list[str], str, str]]:
    """name -> (overrides, key the message names, text it contains)."""
    good = _jsonl(d / "good.jsonl", [{"id": i, "text": f"sentence {i}"} for i in range(4)])
    corrupt_json = d / "corrupt.jsonl"
    corrupt_json.write_text('{"id": 0, "text": "fine"}\n{"id": 1, "text": \n')
    corrupt_parquet = d / "corrupt" / "part-1.parquet"
    corrupt_parquet.parent.mkdir()
    pq.write_table(pa.table({"id": [0], "text": ["ok"]}), d / "corrupt" / "part-0.parquet")
    corrupt_parquet.write_bytes(b"PAR1 this is not a parquet file")
    truncated_gzip = d / "truncated.jsonl.gz"
    packed = gzip.compress(b"".join(b'{"id": %d, "text": "a"}\n' % i for i in range(100)))
    truncated_gzip.write_bytes(packed[: len(packed) // 2])
    empty = d / "empty.jsonl"
    empty.write_text("")
    nulls = _jsonl(d / "nulls.jsonl", [{"id": 0, "text": "a"}, {"id": 1, "text": None}])
    mixed = _jsonl(d / "mixed.jsonl", [{"id": 0, "text": "a"}, {"id": "x1", "text": "b"}])
    zero = d / "zero"
    zero.mkdir()
    pq.write_table(
        pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}),
        zero / "part-0.parquet",
    )
    header = d / "header.csv"
    header.write_text("id,text\n")
    numbers = _jsonl(d / "numbers.jsonl", [{"id": 0, "text": 1}, {"id": 1, "text": 2}])
    return {
        "missing path": (
            ["source=json", f"source.params.path={d / 'nope.jsonl'}"],
            "source.params.path",
            f"input path does not exist: {d / 'nope.jsonl'}",
        ),
        "corrupt json file": (
            ["source=json", f"source.params.path={corrupt_json}"],
            "source.params.path",
            f"cannot read input file {corrupt_json}: line 2: Expecting value",
        ),
        "truncated gzip json file": (
            ["source=json", f"source.params.path={truncated_gzip}"],
            "source.params.path",
            f"cannot read input file {truncated_gzip} (OSError: Truncated compressed stream)",
        ),
        "corrupt parquet file": (
            ["source=parquet", f"source.params.path={corrupt_parquet.parent}"],
            "source.params.path",
            f"cannot read input file {corrupt_parquet} (ArrowInvalid: Parquet magic bytes",
        ),
        "column not in the data": (
            ["source=json", f"source.params.path={good}", "predictor.params.input_column=body"],
            "predictor.params.input_column",
            "column 'body' is not in the data; available columns: id, text",
        ),
        "empty data set": (
            ["source=json", f"source.params.path={empty}"],
            "source.params.path",
            f"the source produced no rows from {empty}",
        ),
        "a vector column to a CSV sink": (
            ["source=json", f"source.params.path={good}", "sink=csv"],
            "sink",
            "column 'embedding' is fixed_size_list<float32>[384], which sink 'csv' cannot "
            "write: a CSV field holds one scalar, not a list, a struct or a tensor. Write it "
            "with sink=parquet or sink=json, or leave the column out: "
            "sink.params.columns=[id, text]",
        ),
        "a column of mixed JSON types": (
            ["source=json", f"source.params.path={mixed}"],
            "source.params.path",
            f"cannot read input file {mixed}: column 'id' holds values of different JSON types "
            "(number, then string). Declare its type, e.g. source.params.schema={id: string}",
        ),
        "zero-row parquet files": (
            ["source=parquet", f"source.params.path={zero}"],
            "source.params.path",
            f"the source produced no rows from {zero} (its Parquet files hold no rows). Set "
            "run.allow_empty=true",
        ),
        "a header-only CSV file": (
            ["source=csv", f"source.params.path={header}"],
            "source.params.path",
            f"the source produced no rows from {header} (a header without rows)",
        ),
        "no cluster at ray.address": (
            ["source=json", f"source.params.path={good}", "ray=cluster", "ray.address=127.0.0.1:9"],
            "ray.address",
            "nothing answers at 127.0.0.1:9",
        ),
        "nulls in the input column": (
            ["source=json", f"source.params.path={nulls}", *EMBED],
            "predictor.params.input_column",
            "column 'text' has null values",
        ),
        "wrong dtype": (
            ["source=json", f"source.params.path={numbers}", *EMBED],
            "predictor.params.input_column",
            "column 'text' holds int64 values; sentence embeddings need strings",
        ),
        "a GPU the cluster lacks": (
            ["source=json", f"source.params.path={good}", "predictor.stage.num_gpus=1"],
            "predictor.stage.num_gpus",
            "but the local machine has 0 GPUs",
        ),
        "a custom resource no node has": (
            [
                "source=json",
                f"source.params.path={good}",
                "+predictor.stage.ray_remote_args={resources: {tpu_v9: 1}}",
            ],
            "predictor.stage.ray_remote_args.resources.tpu_v9",
            "no node of the local machine has it; the job would wait forever",
        ),
    }


CASE_NAMES = [
    "missing path",
    "corrupt json file",
    "corrupt parquet file",
    "column not in the data",
    "truncated gzip json file",
    "empty data set",
    "a vector column to a CSV sink",
    "a column of mixed JSON types",
    "zero-row parquet files",
    "a header-only CSV file",
    "no cluster at ray.address",
    "nulls in the input column",
    "wrong dtype",
    "a GPU the cluster lacks",
    "a custom resource no node has",
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Run every case once (three at a time); name -> (case, output path, CompletedProcess)."""
    d = tmp_path_factory.mktemp("bad_input")
    cases = _cases(d)
    assert sorted(cases) == sorted(CASE_NAMES)

    def run(item):
        name, (overrides, _, _) = item
        out = d / "out" / name.replace(" ", "_")
        args = [*overrides, f"sink.params.path={out}", "run.progress=false", "ray.num_cpus=2"]
        # A folder of its own: cases started in the same second would share Hydra's default.
        args.append(f"hydra.run.dir={d / 'runs' / name.replace(' ', '_')}")
        return name, out, run_cli(*args, timeout=300)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(run, cases.items()))
    return {name: (cases[name], out, proc) for name, out, proc in results}


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_a_clear_error_with_no_output(outcomes, name):
    (_, key, text), out, proc = outcomes[name]
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = next(
        line for line in proc.stderr.splitlines() if line.startswith("bulkinfer: error:")
    )
    assert message.startswith(f"bulkinfer: error: {key}: "), message
    assert text in message, message
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert not Path(str(out) + STAGING_SUFFIX).exists()
