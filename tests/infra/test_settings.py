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
    monkeypatch.setenv("TAI_AUGMENT", "flip")
    message = r"TAI_AUGMENT: .*'affine', 'crop-flip' or 'none'.*\(got 'flip'\)"
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_an_unknown_model_is_refused_before_anything_runs(tmp_path, monkeypatch):
    from flows.preflight import check_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAI_MODEL", "vgg")
    with pytest.raises(SettingsError, match=r"^TAI_MODEL: unknown model 'vgg'; choose one of"):
        check_model(load_settings())


def test_pretrained_weights_missing_from_the_cache_name_the_file_to_fetch(tmp_path, monkeypatch):
    from flows.preflight import check_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TAI_MODEL", "resnet18")
    monkeypatch.setenv("TAI_PRETRAINED", "DEFAULT")
    message = r"^TAI_PRETRAINED: .*missing file .*resnet18-f37072fd\.pth.*Nothing is downloaded"
    with pytest.raises(SettingsError, match=message):
        check_model(load_settings())


def test_unfreezing_needs_a_frozen_backbone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAI_UNFREEZE_AFTER_EPOCHS", "1")
    with pytest.raises(SettingsError, match=r"^invalid settings: TAI_UNFREEZE_AFTER_EPOCHS needs"):
        load_settings()
    monkeypatch.setenv("TAI_FREEZE_BACKBONE", "true")
    assert load_settings().unfreeze_after_epochs == 1
    monkeypatch.setenv("TAI_STRATEGY", "ddp")
    with pytest.raises(SettingsError, match=r"does not work with TAI_STRATEGY=ddp"):
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


def test_default_corruptions_are_the_cheap_built_in_subset(tmp_path, monkeypatch):
    from tai.principles.reliability.corruptions import DEFAULT_CORRUPTIONS

    monkeypatch.chdir(tmp_path)
    assert tuple(load_settings().corruptions) == DEFAULT_CORRUPTIONS


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("TAI_ADVERSARIAL_EPSILONS", "[0.1, 2]", r"every epsilon must be in \(0, 1\].*\[2.0\]"),
        ("TAI_TARGET_COVERAGE", "1.5", r"TAI_TARGET_COVERAGE: .*less than or equal to 1"),
        ("TAI_TARGET_COVERAGE", "0", r"TAI_TARGET_COVERAGE: .*greater than 0"),
        ("TAI_CORRUPTIONS", "[]", r"TAI_CORRUPTIONS: .*at least 1 item"),
        ("TAI_CERTIFY_SIGMA", "-1", r"TAI_CERTIFY_SIGMA: .*greater than 0"),
    ],
)
def test_tai_check_options_are_validated(tmp_path, monkeypatch, key, value, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_epsilons_are_sorted_and_unique(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAI_ADVERSARIAL_EPSILONS", "[0.1, 0.03, 0.1]")
    assert load_settings().adversarial_epsilons == [0.03, 0.1]


def test_a_tai_variable_that_names_no_setting_is_reported_with_the_closest_setting():
    from infra.settings import unknown_variables

    environ = {
        "TAI_BUDGET": "128",  # the setting is tai_budget: TAI_TAI_BUDGET
        "TAI_MAX_EPOCS": "2",
        "TAI_XYZZY": "1",
        "TAI_MAX_EPOCHS": "2",  # a setting
        "TAI_CODE_VERSION": "abc",  # the project's, not a setting
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == [
        "TAI_BUDGET is not a setting and is ignored; did you mean TAI_TAI_BUDGET?",
        "TAI_MAX_EPOCS is not a setting and is ignored; did you mean TAI_MAX_EPOCHS?",
        "TAI_XYZZY is not a setting and is ignored; README, Settings, lists them",
    ]
    assert unknown_variables({"TAI_MAX_EPOCHS": "2", "TAI_SETTINGS_FILE": "x"}) == []
