"""Objects beyond the store: spill files (files), the driver's spill
folders (directory) and the spiller thread (spiller)."""
