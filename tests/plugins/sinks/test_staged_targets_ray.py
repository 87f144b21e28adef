"""Every staged target through Ray Data's write path: several write tasks per unit, receipts on
the driver, one publish (one local Ray for the module)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from plugins.sinks.targets.iceberg_target import IcebergParams, IcebergTarget
from plugins.sinks.targets.lance_target import LanceParams, LanceTarget
from plugins.sinks.targets.ray_write import write_unit
from plugins.sinks.targets.sql_target import SqlParams, SqlTarget

DIM = 4
SCHEMA = pa.schema([("id", pa.int64()), ("vec", pa.list_(pa.float32(), DIM))])


def rows(lo: int, hi: int) -> pa.Table:
    vectors = np.arange(lo * DIM, hi * DIM, dtype=np.float32) / 7
    return pa.table(
        {
            "id": pa.array(range(lo, hi), pa.int64()),
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors), DIM),
        }
    )


def lance(tmp_path):
    t = LanceTarget(LanceParams(path=str(tmp_path / "items.lance")))
    return t, lambda: t.open().to_table()


def iceberg(tmp_path):
    (tmp_path / "wh").mkdir()
    catalog = {
        "type": "sql",
        "uri": f"sqlite:///{tmp_path}/c.db",
        "warehouse": f"file://{tmp_path}/wh",
    }
    t = IcebergTarget(IcebergParams(catalog=catalog, table="ns.items"))
    return t, lambda: t.load().scan().to_arrow()


def sqlite(tmp_path):
    t = SqlTarget(SqlParams(url=f"sqlite:///{tmp_path}/o.db", table="items", json_columns=["vec"]))

    def read() -> pa.Table:
        import json

        engine = t.engine()
        with engine.connect() as connection:
            got = connection.exec_driver_sql("SELECT id, vec FROM items").all()
        engine.dispose()
        return pa.table({"id": [r[0] for r in got], "vec": [json.loads(r[1]) for r in got]})

    return t, read


@pytest.mark.parametrize("make", [lance, iceberg, sqlite])
def test_units_written_by_ray_tasks_publish_every_row_once(ray_session, tmp_path, make):
    ray = ray_session
    t, read = make(tmp_path)
    t.check(SCHEMA)
    state = t.begin("run-1", SCHEMA)
    receipts = []
    for unit, (lo, hi) in enumerate([(0, 120), (120, 200)]):
        dataset = ray.data.from_arrow(rows(lo, hi)).repartition(3)
        receipts.append(write_unit(t, dataset, state, f"u{unit}", {"num_cpus": 0.5}))
    assert [r["rows"] for r in receipts] == [120, 80]
    assert len(receipts[0]["parts"]) >= 2  # several write tasks, one receipt
    assert t.publish(state, receipts)["rows"] == 200
    got = read().sort_by("id")
    assert got["id"].to_pylist() == list(range(200))
    expected = pa.array(rows(0, 200)["vec"].to_pylist(), pa.list_(pa.float32()))
    assert got["vec"].cast(pa.list_(pa.float32())).combine_chunks().equals(expected)
