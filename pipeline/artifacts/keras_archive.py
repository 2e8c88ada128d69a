"""Byte-reproducible `.keras` archives, without importing Keras.

Keras stamps each archive with the save time (in `metadata.json` and in the zip entry of the
weights) and numbers objects shared between layers by their Python `id()` (in `config.json`), so
the same weights would hash differently in every process. `canonical_keras_bytes` rewrites the
times to fixed values and renumbers shared objects 1, 2, ... in order of appearance; everything
else, weights included, is kept as saved.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FIXED_DATE_SAVED = "1980-01-01@00:00:00"


def renumber_shared_objects(config: Any, numbering: dict[int, int] | None = None) -> Any:
    """`config` with every `shared_object_id` replaced by its order of first appearance."""
    numbering = {} if numbering is None else numbering
    if isinstance(config, list):
        return [renumber_shared_objects(item, numbering) for item in config]
    if not isinstance(config, dict):
        return config
    renumbered = {}
    for key, value in config.items():
        if key == "shared_object_id":
            value = numbering.setdefault(value, len(numbering) + 1)
        renumbered[key] = renumber_shared_objects(value, numbering)
    return renumbered


def canonical_keras_bytes(archive_bytes: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(archive_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == "metadata.json":
                metadata = json.loads(data)
                metadata["date_saved"] = FIXED_DATE_SAVED
                data = json.dumps(metadata).encode()
            elif entry.filename == "config.json":
                data = json.dumps(renumber_shared_objects(json.loads(data))).encode()
            info = zipfile.ZipInfo(entry.filename, date_time=FIXED_ZIP_TIME)
            info.compress_type = entry.compress_type
            info.external_attr = 0o644 << 16
            target.writestr(info, data)
    return out.getvalue()
