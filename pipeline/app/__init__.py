"""The application layer: the Hydra app (``bulkinfer``), the ``bulkinfer-plugins`` command,
command-line overrides, config packages, ``metrics.json`` and sweep summaries.

The only layer that knows Hydra. Imports run app -> execute -> plan -> output -> contract.
"""
