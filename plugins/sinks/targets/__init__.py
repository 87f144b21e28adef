"""Non-file outputs (Lance, Iceberg, SQL) staged work unit by work unit and published at once.

Every target here keeps the promise of the file sinks: a failed job leaves the target as it was
for every reader, a successful one adds (or replaces) all its rows in one commit, and a resumed
job adds each row once. The steps, shared by all engines (:class:`~.protocol.StagedTarget`):

``check(schema)``
    On the driver before any model loads: refuse what ``mode`` forbids and columns the engine
    cannot hold. Creates nothing.
``begin(run_id, schema) -> state``
    The JSON-able facts the later steps need (where staged data goes, the version the job
    started from); the job record keeps them so a resumed run uses the same ones.
``writer(state, unit_id).write(tables) -> parts``
    Inside each Ray write task: stage one task's rows invisibly to readers. A unit's receipt,
    ``{"unit", "rows", "parts"}`` (:func:`~.protocol.receipt`), is JSON-able: the unit's
    marker keeps it.
``publish(state, receipts) -> outcome``
    One commit makes every receipted row visible; repeating it after a crash is a no-op.
``discard(state, unit_ids, receipts)``
    Drop what uncommitted units staged (also units killed before they had a receipt, where the
    engine allows: see each target).
``abandon(state)``
    Drop everything the run staged (starting over).
"""
