"""The staged targets of the table sinks (``sink=lance``, ``iceberg``, ``sql``).

Each implements :class:`pipeline.contract.sink.StagedTarget`, and the core runs it like a file sink
(:mod:`pipeline.output.tables`): ``check`` before any model loads, ``begin`` once per job, each work
unit staged invisibly by Ray write tasks (:mod:`.protocol`: a :class:`~.protocol.UnitWriter` per
task, parts collected into the unit's receipt), ``publish`` in one commit, ``discard`` and
``abandon`` for what a crashed or failed job staged. The job record goes to the target's job
store: a folder beside a Lance dataset or an Iceberg table's data, tables in the SQL target's
database (:mod:`.sql_store`). Credentials come from environment variables (:mod:`.env`).
See docs/sinks.md.
"""
