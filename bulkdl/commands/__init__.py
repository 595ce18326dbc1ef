"""The commands' bodies: what ``bulkdl run``, ``verify`` and ``check`` do once the command line is parsed."""
