"""The planning layer: a validated config -> one frozen plan, with neither Ray nor Hydra.

The plan model, the planner, the CPU shares of a cluster, fingerprints, validation of config
values, the plugin registry and the dry run's report. Imports only ``output`` and ``contract``.
"""
