"""The chaos run: the platform under faults, then an independent check (docs/chaos.md)."""
