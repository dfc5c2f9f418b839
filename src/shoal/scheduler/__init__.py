"""The scheduler layer: the sans-I/O scheduling core (state.py), reference
counting (refs.py), the message protocol (protocol.py), the worker pool
(pool.py) and the I/O shell that drives them (shell.py)."""
