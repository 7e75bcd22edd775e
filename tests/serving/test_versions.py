"""The model directory contract: integer versions, atomic appearance, byte fingerprints."""

import os
import threading

import pytest

from serving import versions


def _fake_saved_model(path, payload: bytes = b"graph"):
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(payload)
    (path / "variables" / "variables.index").write_bytes(b"index-" + payload)
    return path


def test_versions_are_increasing_integers_and_temporary_dirs_are_ignored(tmp_path):
    base = tmp_path / "models"
    model = _fake_saved_model(tmp_path / "m")
    assert versions.list_versions(base) == []
    assert versions.publish_version(model, base) == 1
    assert versions.publish_version(model, base) == 2
    (base / f"{versions.TMP_PREFIX}half-written").mkdir()
    (base / "notes").mkdir()
    assert versions.list_versions(base) == [1, 2]
    assert versions.latest_version(base) == 2
    # publish_version leaves no staging directory of its own behind.
    assert [p.name for p in base.iterdir() if p.name.startswith(versions.TMP_PREFIX)] == [
        f"{versions.TMP_PREFIX}half-written"
    ]


def test_published_copy_has_the_same_fingerprint_and_different_models_differ(tmp_path):
    one = _fake_saved_model(tmp_path / "one", b"a")
    two = _fake_saved_model(tmp_path / "two", b"b")
    base = tmp_path / "models"
    version = versions.publish_version(one, base)
    assert versions.model_fingerprint(base / str(version)) == versions.model_fingerprint(one)
    assert versions.model_fingerprint(one) != versions.model_fingerprint(two)
    assert versions.fingerprints(base) == {1: versions.model_fingerprint(one)}


def test_a_directory_that_is_not_a_saved_model_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a SavedModel"):
        versions.publish_version(tmp_path / "empty", tmp_path / "models")
    assert versions.list_versions(tmp_path / "models") == []


def test_concurrent_publishers_get_distinct_versions(tmp_path):
    base = tmp_path / "models"
    models = [_fake_saved_model(tmp_path / f"m{i}", str(i).encode()) for i in range(6)]
    results = []
    threads = [threading.Thread(target=lambda m=m: results.append(versions.publish_version(m, base))) for m in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert versions.list_versions(base) == [1, 2, 3, 4, 5, 6]
    # Every version is complete: both files present with the bytes of one source model.
    for version in results:
        assert os.path.exists(base / str(version) / "variables" / "variables.index")
