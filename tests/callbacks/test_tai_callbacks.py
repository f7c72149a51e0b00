import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn

from callbacks import (
    AdversarialCallback,
    CalibrationCallback,
    PrototypeExplanationCallback,
    RobustnessCallback,
)
from tai.modeling.module import ClassifierModule
from tai.principles.reliability.calibration import calibration_summary


def _trainer(tmp_path: Path, callbacks, *, epochs=2, logger=False):
    return pl.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        inference_mode=False,
        log_every_n_steps=1,
    )


def test_callbacks_log_metrics_and_figures_to_mlflow(tmp_path, loaders):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger("cb", tracking_uri=uri, artifact_location=(tmp_path / "art").as_uri())
    cbs = [
        CalibrationCallback(budget=40, log_figures=True),
        RobustnessCallback(corruptions=["gaussian_noise", "contrast"], budget=20),
        PrototypeExplanationCallback(per_class=1, n_steps=8, deletion_steps=4),
    ]
    module = ClassifierModule("small_cnn", 1, 3, learning_rate=5e-3)
    _trainer(tmp_path, cbs, logger=logger).fit(module, *loaders)

    client = MlflowClient(uri)
    metrics = client.get_run(logger.run_id).data.metrics
    for key in (
        "tai/calibration/ece",
        "tai/calibration/brier",
        "tai/robustness/mean_corruption_accuracy",
        "tai/robustness/contrast_mean",
        "tai/explain/deletion_auc",
    ):
        assert key in metrics, key
    history = client.get_metric_history(logger.run_id, "tai/calibration/ece")
    assert len(history) == 2  # one value per validation epoch, none from the sanity check
    artifacts = {f.path for f in client.list_artifacts(logger.run_id, "tai/calibration")}
    assert artifacts == {
        "tai/calibration/reliability_epoch000.png",
        "tai/calibration/reliability_epoch001.png",
    }
    # The other two log their figure on the last epoch only (the default).
    assert [f.path for f in client.list_artifacts(logger.run_id, "tai/explain")] == [
        "tai/explain/prototypes_epoch001.png"
    ]


def test_calibration_callback_equals_the_tai_function_on_the_same_samples(tmp_path, loaders):
    cb = CalibrationCallback(budget=40)
    module = ClassifierModule("small_cnn", 1, 3, learning_rate=5e-3)
    _trainer(tmp_path, [cb]).fit(module, *loaders)

    x = torch.cat([b[0] for b in loaders[1]])[:40]
    y = torch.cat([b[1] for b in loaders[1]])[:40]
    module.eval()
    with torch.no_grad():
        expected = calibration_summary(module(x).softmax(1), y)
    assert cb.last_result.n_samples == 40  # the budget, not the 60 validation images
    assert cb.last_result.ece == pytest.approx(expected.ece, abs=1e-6)
    assert cb.last_result.nll == pytest.approx(expected.nll, abs=1e-5)


def test_every_n_epochs_skips_epochs_but_always_runs_the_last(tmp_path, loaders):
    runs = []

    class Spy(CalibrationCallback):
        def run_check(self, trainer, *args):
            runs.append(trainer.current_epoch)
            return super().run_check(trainer, *args)

    module = ClassifierModule("small_cnn", 1, 3)
    _trainer(tmp_path, [Spy(every_n_epochs=2, log_figures=False)], epochs=3).fit(module, *loaders)
    assert runs == [1, 2]


def test_robustness_callback_reports_every_requested_cell(tmp_path, loaders):
    cb = RobustnessCallback(corruptions=["gaussian_blur"], severities=[1, 5], budget=30)
    module = ClassifierModule("small_cnn", 1, 3)
    _trainer(tmp_path, [cb], epochs=1).fit(module, *loaders)
    assert set(cb.last_result.accuracy) == {"gaussian_blur"}
    assert len(cb.last_result.accuracy["gaussian_blur"]) == 2


def test_prototype_callback_uses_a_named_layer_when_the_model_has_no_embed(tmp_path, loaders):
    class Plain(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.ReLU())
            self.out = nn.Linear(16, 3)

        def forward(self, x):
            return self.out(self.body(x))

        def training_step(self, batch, _):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, _):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cb = PrototypeExplanationCallback(embedding_layer="body", n_steps=4, log_figures=False)
    _trainer(tmp_path, [cb], epochs=1).fit(Plain(), *loaders)
    assert sorted(cb.last_result.prototypes.indices) == [0, 1, 2]
    assert 0.0 <= cb.last_result.deletion_auc <= 1.0

    with pytest.raises(ValueError, match="`embedding_layer` 'head' is not a submodule of Plain"):
        _trainer(tmp_path, [PrototypeExplanationCallback(embedding_layer="head")]).fit(
            Plain(), *loaders
        )
    with pytest.raises(
        ValueError, match="Plain has no `embed\\(x\\)` method; pass `embedding_layer="
    ):
        _trainer(tmp_path, [PrototypeExplanationCallback()]).fit(Plain(), *loaders)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CalibrationCallback(n_bins=0), "`n_bins` must be a positive integer, got 0"),
        (lambda: CalibrationCallback(budget=-5), "`budget` must be a positive integer, got -5"),
        (
            lambda: CalibrationCallback(every_n_epochs=1.5),
            "`every_n_epochs` must be a positive integer, got 1.5",
        ),
        (
            lambda: RobustnessCallback(corruptions=["fog2"]),
            "`corruptions` must be a non-empty list of .*gaussian_noise.*got \\['fog2'\\]",
        ),
        (
            lambda: RobustnessCallback(severities=[0, 6]),
            "`severities` must be a non-empty subset of 1..5, got \\[0, 6\\]",
        ),
        (
            lambda: PrototypeExplanationCallback(per_class=0),
            "`per_class` must be a positive integer, got 0",
        ),
        (
            lambda: PrototypeExplanationCallback(method="lime"),
            "`method` must be one of integrated_gradients, saliency, gradcam, occlusion, "
            "got 'lime'",
        ),
        (
            lambda: AdversarialCallback(epsilons=[0.1, 2.0]),
            r"`epsilons` must be a non-empty list in \(0, 1\], got \[0.1, 2.0\]",
        ),
        (
            lambda: AdversarialCallback(attacks=["cw"]),
            "`attacks` must be a non-empty subset of pgd, fgsm; got \\['cw'\\]",
        ),
        (
            lambda: CalibrationCallback(log_figures="always"),
            "`log_figures` must be True, False or 'last', got 'always'",
        ),
    ],
)
def test_callback_arguments_are_checked_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_prototype_callback_takes_another_attribution_method(tmp_path, loaders, method):
    cb = PrototypeExplanationCallback(method=method, deletion_steps=4, log_figures=True)
    module = ClassifierModule("small_cnn", 1, 3)
    _trainer(tmp_path, [cb], epochs=1).fit(module, *loaders)
    assert 0.0 <= cb.last_result.deletion_auc <= 1.0
    assert math.isnan(cb.last_result.convergence_delta)  # only Integrated Gradients has one


def test_adversarial_callback_equals_the_tai_function_on_the_same_samples(tmp_path, loaders):
    from tai.principles.security.adversarial import adversarial_accuracy

    seen = {}

    class Spy(AdversarialCallback):
        def run_check(self, trainer, module, images, targets, logits):
            seen["data"] = (module, images, targets)
            return super().run_check(trainer, module, images, targets, logits)

    cb = Spy(epsilons=[0.05, 0.2], steps=3, budget=24, log_figures=False)
    _trainer(tmp_path, [cb], epochs=1).fit(ClassifierModule("small_cnn", 1, 3), *loaders)
    pgd, fgsm = cb.last_result
    assert (pgd.attack, fgsm.attack) == ("pgd", "fgsm")
    module, images, targets = seen["data"]
    assert len(targets) == 24
    expected = adversarial_accuracy(module, images, targets, epsilons=(0.05, 0.2), steps=3)
    assert pgd.accuracy == expected.accuracy
    assert pgd.accuracy[1] <= pgd.accuracy[0] <= pgd.clean_accuracy
