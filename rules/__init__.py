"""Spoolside's rule engine: the ``PYME.cluster.rules`` API over real cluster clients (no Qt)."""
