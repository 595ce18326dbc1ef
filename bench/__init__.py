"""``make bench``: bulkdl against aria2c, curl and wget2 on a real nginx, in the same run. Never run by CI."""
