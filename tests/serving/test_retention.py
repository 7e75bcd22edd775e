"""`mlops models prune`: keeps the newest N plus labelled, pinned and served versions; deletes atomically."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from serving.retention import apply_prune, plan_prune
from tests.conftest import mlops


def fake_version(base: Path, version: int, complete: bool = True) -> Path:
    path = base / str(version)
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"pb")
    if complete:
        (path / "variables" / "variables.index").write_bytes(b"i")
        (path / "variables" / "variables.data-00000-of-00001").write_bytes(b"d")
    return path


def on_disk(base: Path):
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit())


def test_keeps_the_newest_n_plus_labelled_and_pinned_versions(tmp_path):
    for v in range(1, 11):
        fake_version(tmp_path, v)
    (tmp_path / ".incoming-x").mkdir()  # a push in progress is never touched
    plan = plan_prune(tmp_path, 3, labels={"stable": 2, "canary": 9}, pinned={4})
    assert sorted(plan.keep) == [2, 4, 8, 9, 10]
    assert plan.delete == [1, 3, 5, 6, 7]
    assert "label 'stable'" in plan.keep[2] and "pinned by the version policy" in plan.keep[4]
    assert any("served" in why for why in plan.keep[10])
    deleted = apply_prune(plan, emit=lambda _: None)
    assert deleted == [1, 3, 5, 6, 7]
    assert on_disk(tmp_path) == [2, 4, 8, 9, 10]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.isdigit()) == [".incoming-x"]


def test_never_deletes_what_serves_even_when_newer_versions_are_broken(tmp_path):
    for v in (1, 2, 3):
        fake_version(tmp_path, v)
    fake_version(tmp_path, 4, complete=False)  # partial copy: the server still serves 3
    plan = plan_prune(tmp_path, 1)
    assert sorted(plan.keep) == [3, 4]
    plan = plan_prune(tmp_path, 1, served={2})
    assert sorted(plan.keep) == [2, 3, 4]
    with pytest.raises(ValueError):
        plan_prune(tmp_path, 0)


def test_fewer_versions_than_keep_deletes_nothing(tmp_path):
    for v in (1, 2):
        fake_version(tmp_path, v)
    assert plan_prune(tmp_path, 5).delete == []
    assert plan_prune(tmp_path / "missing", 5).on_disk == []


def test_cli_dry_run_then_prune_with_the_labels_of_models_config(tmp_path):
    home = tmp_path
    base = home / "serving" / "models" / "taxi"
    for v in range(1, 9):
        fake_version(base, v)
    (home / "serving" / "models.config").write_text(
        'model_config_list { config { name: "taxi" base_path: "serving/models/taxi" model_platform: "tensorflow" '
        'version_labels { key: "stable" value: 1 } } }'
    )
    dry = mlops(home, "models", "prune", "--keep", "2", "--dry-run")
    assert "dry run: nothing deleted" in dry.stdout
    assert "keep       1  label 'stable'" in dry.stdout
    assert on_disk(base) == list(range(1, 9))
    result = json.loads(mlops(home, "models", "prune", "--keep", "2", "--json").stdout)
    assert result["deleted"] == [2, 3, 4, 5, 6]
    assert on_disk(base) == [1, 7, 8]
    assert not [p for p in base.iterdir() if p.name.startswith(".deleting-")]
    bad = mlops(home, "models", "prune", "--keep", "0", check=False)
    assert bad.returncode == 2 and "keep at least 1" in bad.stderr


def test_cli_keeps_what_a_latest_n_policy_loads_and_reads_the_entry_of_the_pruned_directory(tmp_path):
    home = tmp_path
    base = home / "serving" / "models" / "taxi"
    other = home / "elsewhere"
    for v in range(1, 7):
        fake_version(base, v)
        fake_version(other, v)
    # The entry named taxi serves another directory with a label; the pruned directory's own entry
    # (another name) keeps its newest 3 loaded.
    (home / "serving" / "models.config").write_text(
        'model_config_list { '
        'config { name: "taxi" base_path: "elsewhere" model_platform: "tensorflow" '
        '  version_labels { key: "stable" value: 1 } } '
        'config { name: "taxi_b" base_path: "serving/models/taxi" model_platform: "tensorflow" '
        '  model_version_policy { latest { num_versions: 3 } } } }'
    )
    dry = mlops(home, "models", "prune", "--keep", "1", "--model-base-path", "serving/models/taxi", "--dry-run")
    assert "keep       4  loaded under the version policy (latest 3)" in dry.stdout
    result = json.loads(mlops(home, "models", "prune", "--keep", "1", "--model-base-path",
                              "serving/models/taxi", "--json").stdout)
    assert result["deleted"] == [1, 2, 3]  # the other directory's label on version 1 does not apply here
    assert on_disk(base) == [4, 5, 6]
    # By name, the taxi entry's directory and its label.
    result = json.loads(mlops(home, "models", "prune", "--keep", "1", "--json").stdout)
    assert result["base"] == str(other.resolve()) and result["deleted"] == [2, 3, 4, 5]
    assert on_disk(other) == [1, 6]


def test_cli_a_version_that_cannot_be_deleted_is_named_and_exits_1(tmp_path):
    base = tmp_path / "serving" / "models" / "taxi"
    for v in range(1, 5):
        fake_version(base, v)
    subprocess.run(["chattr", "+i", str(base / "1")], check=True)  # immutable: even root cannot rename it
    try:
        done = mlops(tmp_path, "models", "prune", "--keep", "1", "--json", check=False)
    finally:
        subprocess.run(["chattr", "-i", str(base / "1")], check=True)
    assert done.returncode == 1, done
    result = json.loads(done.stdout)
    assert result["deleted"] == [2, 3] and list(result["failed"]) == ["1"]
    assert on_disk(base) == [1, 4]
