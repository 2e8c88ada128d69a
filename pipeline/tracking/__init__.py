"""MLflow: where runs are logged, the lineage tags that join them to `dvc.lock`, read-only
lookups, and the model registry's champion rule."""
