"""What runs in a worker process, one file at a time per call of fetch.fetch_file: the HTTP client (net),
the segment threads (transfer, board, retry), the bytes on disk (parts, the only owner of a file's parts,
sidecar and assembly temp) and their assembly. Nothing here touches the state database or the screen."""
