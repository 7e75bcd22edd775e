"""The model directory contract: `<base>/<integer version>/saved_model.pb + variables/`.

Pure filesystem code (no TensorFlow), shared by the Pusher, rollback and the model server.
A version directory appears atomically: it is written under a hidden temporary name, fsynced,
then renamed into place, so a reader sees either nothing or a complete SavedModel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Dict, List, Optional

TMP_PREFIX = ".incoming-"


def list_versions(base: Path) -> List[int]:
    """Integer version directories under `base`, ascending. Temporary directories are ignored."""
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def latest_version(base: Path) -> Optional[int]:
    versions = list_versions(base)
    return versions[-1] if versions else None


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over relative paths and bytes of every file: equal iff the copies are identical."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode())
        digest.update(b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fingerprints(base: Path) -> Dict[int, str]:
    return {v: model_fingerprint(base / str(v)) for v in list_versions(base)}


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_version(model_dir: Path, base: Path) -> int:
    """Copies a SavedModel to `<base>/<next version>` atomically and returns the version.

    If another writer takes the same version number first, the next free number is used.
    """
    if not (Path(model_dir) / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{model_dir} is not a SavedModel (no saved_model.pb)")
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        shutil.copytree(model_dir, staging)
        _fsync_tree(staging)
        version = (latest_version(base) or 0) + 1
        while True:
            try:
                os.rename(staging, base / str(version))
                break
            except OSError:
                if not (base / str(version)).exists():
                    raise
                version += 1
        _fsync_dir(base)
        return version
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
