"""The embedded PYME-compatible "cluster of one": rule server, data server, workers (no Qt)."""
