"""`JobQueue` implementations that live outside the process (the in-process one is in `memsvc.jobs`)."""
