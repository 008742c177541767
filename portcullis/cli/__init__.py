"""The ``portcullis`` command line."""
