"""One module per DVC stage: a pure core plus a `run(params)` that does the I/O."""
