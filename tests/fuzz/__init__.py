"""The fuzz suite (issue 16): damaged and hostile inputs, each met with a clear error or the
right answer, nothing half-written, the process alive. See oracle.py for the shared checks."""
