"""Where ML Metadata lives: the URL setting, its errors, and that a password never shows."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines.cli import build_parser, main
from pipelines.config import MetadataConfig, PipelineConfig, ProjectPaths
from pipelines.errors import EXIT_CONFIG, ConfigError


def test_default_is_the_homes_sqlite_file(tmp_path):
    found = MetadataConfig.for_home(ProjectPaths(tmp_path), environ={})
    assert found.is_sqlite and found.sqlite_path == str(tmp_path / "var" / "metadata.sqlite")
    assert found.to_proto().sqlite.filename_uri == found.sqlite_path


def test_mysql_url_with_the_password_from_the_environment(tmp_path):
    environ = {"MLOPS_MLMD": "mysql://mlops@db.example:3307/lineage", "MLOPS_MLMD_PASSWORD": "s3cr3t-pw"}
    found = MetadataConfig.for_home(ProjectPaths(tmp_path), environ=environ)
    proto = found.to_proto().mysql
    assert (proto.host, proto.port, proto.database, proto.user, proto.password) == (
        "db.example", 3307, "lineage", "mlops", "s3cr3t-pw")
    assert not found.is_sqlite
    # Where it is, fit for logs and summaries: never the password.
    assert found.url == "mysql://mlops@db.example:3307/lineage"
    assert "s3cr3t-pw" not in repr(found) and "s3cr3t-pw" not in found.url
    config = PipelineConfig.for_project(ProjectPaths(tmp_path), dt.date(2026, 11, 20), metadata=found)
    assert "s3cr3t-pw" not in repr(config)


def test_mysql_port_defaults_and_sqlite_paths_resolve(tmp_path, monkeypatch):
    assert MetadataConfig.parse("mysql://u@h/d").mysql_port == 3306
    monkeypatch.chdir(tmp_path)
    assert MetadataConfig.parse("sqlite:rel/m.sqlite").sqlite_path == str(tmp_path / "rel" / "m.sqlite")
    assert MetadataConfig.parse(f"sqlite:///{tmp_path}/a.sqlite").sqlite_path == str(tmp_path / "a.sqlite")


@pytest.mark.parametrize("url, said", [
    ("mysql://mlops:hunter2@db:3306/mlmd", "carries a password"),
    ("postgres://mlops@db/mlmd", "neither sqlite:PATH nor mysql"),
    ("mysql://db:3306/mlmd", "needs a user, a host and one database"),
    ("mysql://mlops@db:3306/", "needs a user, a host and one database"),
    ("mysql://mlops@db:notaport/mlmd", "not a valid MySQL URL"),
])
def test_bad_urls_are_refused_with_the_fix(url, said):
    with pytest.raises(ConfigError) as caught:
        MetadataConfig.parse(url)
    assert said in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "MLOPS_MLMD_PASSWORD" in str(caught.value)


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch):
    """`mlops --metadata URL` sets $MLOPS_MLMD for its process: put it back after each test (setenv
    records what was there, even nothing; delenv of an unset name would record nothing to restore)."""
    monkeypatch.setenv("MLOPS_MLMD", "")  # empty: unset for MetadataConfig.for_home
    monkeypatch.setenv("MLOPS_MLMD_PASSWORD", "")


def test_the_global_option_is_checked_before_any_work(tmp_path, capsys):
    import os

    assert build_parser().parse_args(["--metadata", "sqlite:x", "metadata", "info"]).metadata == "sqlite:x"
    code = main(["--home", str(tmp_path), "--metadata", "mysql://u:pw@h/d", "metadata", "info"])
    assert code == EXIT_CONFIG
    assert "carries a password" in capsys.readouterr().err
    assert os.environ["MLOPS_MLMD"] == ""  # refused before it became this process's setting
    elsewhere = f"sqlite:{tmp_path / 'elsewhere.sqlite'}"
    assert main(["--home", str(tmp_path), "--metadata", elsewhere, "metadata", "info"]) == 3
    assert os.environ["MLOPS_MLMD"] == elsewhere  # what the warm worker's fork and Airflow's services get
    assert "elsewhere.sqlite: no ML Metadata store yet" in capsys.readouterr().out


def test_init_info_and_migrate_between_sqlite_files(tmp_path, capsys):
    # The same copy the MariaDB tests do (tests/e2e/test_mlmd_mysql.py), here between two SQLite files.
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    source = MetadataConfig(sqlite_path=str(tmp_path / "a" / "m.sqlite"))
    assert main(["--home", str(tmp_path), "--metadata", source.url, "metadata", "info"]) == 3
    assert main(["--home", str(tmp_path), "--metadata", source.url, "metadata", "init"]) == 0
    assert "created ML Metadata schema version" in capsys.readouterr().out
    assert main(["--home", str(tmp_path), "--metadata", source.url, "metadata", "init"]) == 0
    assert "is current: nothing to do" in capsys.readouterr().out
    store = metadata_store.MetadataStore(source.to_proto())
    kind = store.put_artifact_type(pb.ArtifactType(name="Thing", properties={"span": pb.INT}))
    ids = store.put_artifacts([pb.Artifact(type_id=kind, uri=f"/x/{i}", properties={"span": pb.Value(int_value=i)})
                               for i in range(5)])
    store.put_artifacts([pb.Artifact(id=ids[1], type_id=kind, uri="/x/1b", properties={"span": pb.Value(int_value=1)})])
    before = {a.id: (a.uri, a.create_time_since_epoch, a.last_update_time_since_epoch) for a in store.get_artifacts()}

    target = MetadataConfig(sqlite_path=str(tmp_path / "b" / "m.sqlite"))
    assert main(["--home", str(tmp_path), "--metadata", source.url, "metadata", "migrate", "--to", target.url]) == 0
    copied = metadata_store.MetadataStore(target.to_proto())
    after = {a.id: (a.uri, a.create_time_since_epoch, a.last_update_time_since_epoch) for a in copied.get_artifacts()}
    assert after == before  # same ids, same times
    assert [a.properties["span"].int_value for a in copied.get_artifacts()] == list(range(5))
    # The copy is a working store: new ids continue after the copied ones.
    new = copied.put_artifacts([pb.Artifact(type_id=kind, uri="/x/new")])[0]
    assert new > max(before)
    # Once more: the target is not empty, so nothing is copied over it.
    capsys.readouterr()
    assert main(["--home", str(tmp_path), "--metadata", source.url, "metadata", "migrate", "--to", target.url]) == EXIT_CONFIG
    assert "is not empty" in capsys.readouterr().err
