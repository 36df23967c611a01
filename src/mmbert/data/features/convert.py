"""Any store to any store, one record at a time (``mmbert features convert SRC DST``).

Resumable: the destination is opened for appending and ids it already holds are skipped, so a killed
conversion picks up where it stopped (each backend's writer never leaves a half-written image).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mmbert.data import features as features_api
from mmbert.data.features.base import FeatureStoreError
from mmbert.data.features.validate import Problem


@dataclass
class ConvertReport:
    written: int = 0
    skipped: int = 0  # already in the destination (resumed run)
    failed: list[Problem] = field(default_factory=list)  # unreadable source records (with skip_bad)

    def __str__(self) -> str:
        out = f"{self.written} written, {self.skipped} already present"
        if self.failed:
            out += f", {len(self.failed)} unreadable and skipped"
        return out


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    src_format: str | None = None,
    dst_format: str | None = None,
    trust_pickle: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
    dst_options: dict | None = None,
) -> ConvertReport:
    """Copy every record of ``src`` into ``dst`` (created, or appended to when it exists).

    An unreadable source record stops the conversion with an error naming it, unless ``skip_bad``,
    in which case it is listed in the report's ``failed``. ``dst_options`` go to the writer (e.g.
    ``{"layout": "bottomup"}`` for TSV, ``{"compression": "gzip"}`` for HDF5)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.resolve() == dst.resolve():
        raise ValueError(f"{src}: source and destination are the same store")
    report = ConvertReport()
    with features_api.open(src, format=src_format, trust_pickle=trust_pickle) as reader:
        ids = reader.keys()
        with features_api.open(dst, "a", format=dst_format, **(dst_options or {})) as writer:
            for image_id in tqdm(ids, disable=not progress, unit="img", desc=f"{src.name} -> {dst.name}"):
                if image_id in writer:
                    report.skipped += 1
                    continue
                try:
                    record = reader[image_id]
                except FeatureStoreError as e:
                    if not skip_bad:
                        raise
                    report.failed.append(Problem(image_id, str(e)))
                    continue
                writer.write(record)
                report.written += 1
    return report
