"""Sample data and tiny models for bulkinfer's examples and tests (``bulkinfer-samples``).

:mod:`plugins.samples.images` draws image files with Pillow, :mod:`plugins.samples.models` builds
tiny transformers and torch models, :mod:`plugins.samples.tables` writes tables (the shipped
sentences, tabular features) and small models for them; :mod:`plugins.samples.cli` is the
command. Nothing here is a plugin and nothing is downloaded.
"""
