"""shoal: Ray's API for one machine, over a shared-memory object store."""

__version__ = "0.1.0"
