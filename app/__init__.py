"""Spoolside's application layer: entry points and the main window (Qt)."""
