"""The run directory, the contract between training, relaunch, inference and the comparison: its layout, the typed
run record, and the lock that keeps one process in it."""
