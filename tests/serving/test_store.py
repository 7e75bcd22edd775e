"""The model store's version logic with a fake loader (no TensorFlow): policies, labels, failures."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from serving.config import ModelConfig, VersionPolicy, parse_model_config
from serving.errors import NotFound, Unavailable
from serving.store import AVAILABLE, END, ModelStore, Registry, version_stamp


class FakeServable:
    def __init__(self, version):
        self.version = version


class FakeLoader:
    """Loads a version dir when it holds `model.txt` and no `broken` file; counts calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, version, path: Path):
        self.calls.append(version)
        if (path / "broken").exists() or not (path / "model.txt").exists():
            raise RuntimeError(f"cannot load {path.name}")
        return FakeServable(version)


def make_version(base: Path, version: int, broken: bool = False) -> Path:
    path = base / str(version)
    path.mkdir(parents=True)
    (path / "model.txt").write_text(str(version))
    if broken:
        (path / "broken").write_text("x")
    return path


def store_for(base: Path, policy=VersionPolicy(), labels=()):
    loader = FakeLoader()
    return ModelStore(ModelConfig("taxi", base, policy, tuple(labels)), loader, version_stamp), loader


def states(store):
    return {s.version: s.state for s in store.statuses()}


def test_latest_policy_serves_the_newest_version_and_switches_after_loading(tmp_path):
    make_version(tmp_path, 1)
    store, loader = store_for(tmp_path)
    with pytest.raises(Unavailable):
        store.resolve()
    store.poll()
    assert store.resolve().version == 1
    make_version(tmp_path, 2)
    (tmp_path / ".incoming-abc").mkdir()  # a push in progress: ignored
    (tmp_path / "notaversion").mkdir()
    store.poll()
    assert store.resolve().version == 2
    assert states(store) == {1: END, 2: AVAILABLE}
    assert loader.calls == [1, 2]
    with pytest.raises(NotFound):
        store.resolve(version=1)  # unloaded
    with pytest.raises(NotFound):
        store.resolve(version=9)
    assert store.poll() is False  # nothing new: no reload
    assert loader.calls == [1, 2]


def test_a_broken_version_is_skipped_and_retried_only_when_its_files_change(tmp_path):
    make_version(tmp_path, 1)
    store, loader = store_for(tmp_path)
    store.poll()
    broken = make_version(tmp_path, 2, broken=True)
    store.poll()
    store.poll()
    assert store.resolve().version == 1
    assert loader.calls == [1, 2]  # not retried with the same files
    status = {s.version: s for s in store.statuses()}[2]
    assert status.state == END and status.error_code != "OK" and "cannot load" in status.error_message
    with pytest.raises(Unavailable):
        store.resolve(version=2)  # known but failed: 503, not 404
    (broken / "broken").unlink()
    store.poll()
    assert store.resolve().version == 2
    assert loader.calls == [1, 2, 2]


def test_on_start_the_newest_good_version_serves_when_newer_ones_are_broken(tmp_path):
    make_version(tmp_path, 1)
    make_version(tmp_path, 2)
    make_version(tmp_path, 3, broken=True)
    (tmp_path / "4").mkdir()  # partial: no files at all
    store, loader = store_for(tmp_path)
    store.poll()
    assert store.resolve().version == 2
    assert loader.calls == [4, 3, 2]


def test_removing_the_served_version_falls_back_to_the_previous_one(tmp_path):
    make_version(tmp_path, 1)
    make_version(tmp_path, 2)
    store, _ = store_for(tmp_path)
    store.poll()
    assert store.resolve().version == 2
    os.rename(tmp_path / "2", tmp_path / ".deleting-2")
    store.poll()
    assert store.resolve().version == 1


def test_nothing_loadable_keeps_what_serves(tmp_path):
    make_version(tmp_path, 1)
    store, _ = store_for(tmp_path)
    store.poll()
    os.rename(tmp_path / "1", tmp_path / ".gone")
    store.poll()
    assert store.resolve().version == 1


def test_specific_policy_and_labels(tmp_path):
    for v in (1, 2, 3):
        make_version(tmp_path, v)
    store, _ = store_for(tmp_path, VersionPolicy("specific", versions=frozenset({1, 2})),
                         labels=(("canary", 2), ("old", 3), ("stable", 1)))
    store.poll()
    assert states(store) == {1: AVAILABLE, 2: AVAILABLE}
    assert store.resolve().version == 2  # no version asked: the newest loaded
    assert store.resolve(label="stable").version == 1
    assert store.resolve(label="canary").version == 2
    assert store.resolve(version=1).version == 1
    with pytest.raises(NotFound):
        store.resolve(label="nope")
    with pytest.raises(Unavailable):
        store.resolve(label="old")  # labels a version that is not loaded
    with pytest.raises(NotFound):
        store.resolve(version=3)
    assert [s.version for s in store.status_of(label="stable")] == [1]


def test_latest_two_keeps_two(tmp_path):
    for v in (1, 2, 3):
        make_version(tmp_path, v)
    store, _ = store_for(tmp_path, VersionPolicy("latest", num_versions=2))
    store.poll()
    assert states(store) == {2: AVAILABLE, 3: AVAILABLE}


def test_registry_rereads_the_config_file_when_it_changes(tmp_path):
    base = tmp_path / "models"
    for v in (1, 2):
        make_version(base, v)
    config = tmp_path / "models.config"

    def write(stable: int, versions=(1, 2)):
        policy = " ".join(f"versions: {v}" for v in versions)
        config.write_text(
            'model_config_list { config { name: "taxi" base_path: "models" model_platform: "tensorflow" '
            f'model_version_policy {{ specific {{ {policy} }} }} version_labels {{ key: "stable" value: {stable} }} }} }}'
        )

    write(1)
    from serving.config import load_model_config

    loader = FakeLoader()
    registry = Registry(load_model_config(config, tmp_path), loader, version_stamp, config_path=config, home=tmp_path)
    registry.poll_once()
    assert registry.get("taxi").resolve(label="stable").version == 1
    time.sleep(0.01)
    write(2, versions=(2,))
    registry.poll_once()
    assert registry.get("taxi").resolve(label="stable").version == 2
    assert states(registry.get("taxi")) == {1: END, 2: AVAILABLE}
    config.write_text("this is not a text proto {")
    registry.poll_once()  # logged; the previous config stays
    assert registry.get("taxi").resolve(label="stable").version == 2
    with pytest.raises(NotFound):
        registry.get("other")


def test_parse_model_config_policies_and_relative_paths(tmp_path):
    configs = parse_model_config(
        """
        model_config_list {
          config { name: "a" base_path: "serving/models/a" model_platform: "tensorflow"
                   model_version_policy { latest { num_versions: 3 } } }
          config { name: "b" base_path: "/abs/b" model_version_policy { all {} } }
          config { name: "c" base_path: "c" version_labels { key: "stable" value: 4 } }
        }""",
        tmp_path,
    )
    a, b, c = configs
    assert a.base_path == (tmp_path / "serving" / "models" / "a").resolve()
    assert a.policy == VersionPolicy("latest", num_versions=3)
    assert b.base_path == Path("/abs/b") and b.policy.kind == "all"
    assert c.policy == VersionPolicy("latest", num_versions=1) and c.label_map == {"stable": 4}
    assert c.protected_versions() == {4}
