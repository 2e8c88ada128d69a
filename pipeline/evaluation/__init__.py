"""What the pipeline measures, as functions of arrays: reconstruction metrics, classical
denoisers, linear probes, robustness curves, statistics and figures. Models enter as callables,
so nothing here imports TensorFlow."""
