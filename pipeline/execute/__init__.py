"""The execution layer: a plan -> one Ray Data job.

The runner, the compiled ``map_batches`` stages and the call inside each worker, the guard and
ledger around every stage, work units, the Ray session and every private Ray API bulkinfer
uses (``ray_internals``). Imports only ``plan``, ``output`` and ``contract`` of the core.
"""
