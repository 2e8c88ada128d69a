"""Stage `fetch`: raw MNIST into data/raw/, sha256-verified, the same bytes whatever serves it."""

from __future__ import annotations

from pipeline.core import paths
from pipeline.core.config import Params
from pipeline.core.entry import stage_main
from pipeline.core.files import dvc_md5, write_json_atomic
from pipeline.data.arrays import save_arrays
from pipeline.data.images import RAW_SPECS
from pipeline.data.sources import cache_dir, fetch_mnist


def run(params: Params) -> None:
    arrays, served_by = fetch_mnist(params.data.source, cache_dir())
    save_arrays(paths.RAW_DIR, {name: arrays[name] for name in RAW_SPECS})
    # Not a DVC output: data/raw must not depend on which source served it.
    write_json_atomic(
        paths.FETCH_RECORD, {"served_by": served_by, "raw_md5": dvc_md5(paths.RAW_DIR)}
    )
    print(f"fetch: MNIST from {served_by} -> {paths.RAW_DIR}/ (sha256 verified)")


if __name__ == "__main__":
    raise SystemExit(stage_main("fetch", run))
