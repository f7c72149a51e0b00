import pytest

from infra.settings import SettingsError, load_settings


def test_defaults_put_every_embedded_store_in_the_workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    ws = tmp_path / ".tai"
    assert s.workspace_dir == ws
    assert s.tracking_uri == f"sqlite:///{ws / 'mlflow.db'}"
    assert s.artifact_root == (ws / "mlartifacts").as_uri()
    for path in (s.data_dir, s.cache_dir, s.prefect_home, s.reports_dir):
        assert ws in path.parents


def test_environment_overrides_the_settings_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tai.yaml").write_text("max_epochs: 3\nmodel: resnet18\n")
    monkeypatch.setenv("TAI_MAX_EPOCHS", "5")
    s = load_settings()
    assert (s.max_epochs, s.model) == (5, "resnet18")


def test_a_wrong_value_names_the_variable_and_the_value(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAI_MODEL", "vgg")
    message = r"TAI_MODEL: .*'small_cnn' or 'resnet18'.*\(got 'vgg'\)"
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_an_unknown_key_in_the_settings_file_is_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tai.yaml").write_text("max_epoch: 3\n")
    with pytest.raises(SettingsError, match="TAI_MAX_EPOCH: Extra inputs are not permitted"):
        load_settings()


def test_a_missing_settings_file_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("TAI_SETTINGS_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(SettingsError, match="TAI_SETTINGS_FILE points to .*missing.yaml"):
        load_settings()
