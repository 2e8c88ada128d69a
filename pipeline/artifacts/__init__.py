"""Files one stage writes and another reads, and their exact formats: the training history, the
baselines' results, byte-reproducible `.keras` archives. Readable without TensorFlow."""
