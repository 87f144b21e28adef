"""The output layer: staged output and its records, for files and tables alike.

Job records and unit markers, the folder store, the staging folder of a file output,
publishing with the ``_SUCCESS`` manifest, and a table sink's job. Imports only ``contract``.
"""
