"""bulkinfer's own Hydra config groups, as package data (the app reads ``pkg://pipeline.conf``)."""
