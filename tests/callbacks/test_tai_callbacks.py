import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader

import callbacks.calibration
from callbacks import (
    AdversarialCallback,
    CalibrationCallback,
    PrototypeExplanationCallback,
    RobustnessCallback,
)
from callbacks._grid import grid_share
from callbacks.robustness import RobustnessCells
from tai.modeling.module import ClassifierModule
from tai.principles.reliability.calibration import calibration_summary
from tai.principles.reliability.robustness import RobustnessResult, corruption_accuracy
from tai.principles.security.adversarial import adversarial_accuracy
from tai.principles.transparency.attribution_methods import attribute
from tai.principles.transparency.explain import deletion_auc
from tai.principles.transparency.prototypes import select_prototypes
from tests.callbacks._ddp_helpers import FigureFileLogger, TinyNet, TwoRanksInOne
from tests.callbacks.conftest import _squares
from tests.layouts import conv_layouts


def _trainer(tmp_path: Path, callbacks, *, epochs=2, logger=False, inference_mode=False):
    return pl.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        inference_mode=inference_mode,
        log_every_n_steps=1,
    )


def _mlflow(tmp_path: Path) -> tuple[MLFlowLogger, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger("cb", tracking_uri=uri, artifact_location=(tmp_path / "art").as_uri())
    return logger, uri


def _history(uri: str, run_id: str, key: str) -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, key)]


@pytest.mark.slow
@pytest.mark.integration  # an MLflow logger
def test_callbacks_log_metrics_and_figures_to_mlflow(tmp_path, loaders):
    logger, uri = _mlflow(tmp_path)
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
        "tai/robustness/contrast_s5",
        "tai/explain/deletion_auc",
    ):
        assert key in metrics, key
    history = client.get_metric_history(logger.run_id, "tai/calibration/ece")
    assert len(history) == 2  # one value per validation epoch, none from the sanity check
    # The interim check of epoch 0 measured two cells of the grid: no mean from it.
    assert len(client.get_metric_history(logger.run_id, "tai/robustness/clean_accuracy")) == 2
    assert len(_history(uri, logger.run_id, "tai/robustness/mean_corruption_accuracy")) == 1
    # Prototypes are checked on the last epoch only by default.
    assert len(_history(uri, logger.run_id, "tai/explain/deletion_auc")) == 1
    # Each check logs how many samples it measured: its budget, or the validation split.
    val_size = len(loaders[1].dataset)
    for name, size in (("calibration", 40), ("robustness", 20), ("explain", val_size)):
        assert metrics[f"tai/{name}/samples"] == min(size, val_size), name
    artifacts = {f.path for f in client.list_artifacts(logger.run_id, "tai/calibration")}
    assert artifacts == {
        "tai/calibration/reliability_epoch000.png",
        "tai/calibration/reliability_epoch001.png",
    }
    # The other two log their figure on the last epoch only (the default).
    assert [f.path for f in client.list_artifacts(logger.run_id, "tai/explain")] == [
        "tai/explain/prototypes_epoch001.png"
    ]
    assert [f.path for f in client.list_artifacts(logger.run_id, "tai/robustness")] == [
        "tai/robustness/curve_epoch001.png"
    ]


@pytest.mark.slow
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


@pytest.mark.slow
def test_every_n_epochs_skips_epochs_but_always_runs_the_last_in_full(tmp_path, loaders):
    runs = []

    class Spy(CalibrationCallback):
        def run_check(self, trainer, *args, final):
            runs.append((trainer.current_epoch, final))
            return super().run_check(trainer, *args, final=final)

    module = ClassifierModule("small_cnn", 1, 3)
    cbs = [Spy(every_n_epochs=2, log_figures=False), Spy(every_n_epochs=None, log_figures=False)]
    _trainer(tmp_path, cbs, epochs=3).fit(module, *loaders)
    # Epoch 1 (the second) is every second epoch; epoch 2 is the last; the final check
    # is not repeated in on_train_end.
    assert runs == [(1, False), (2, True), (2, True)]


def _spy_robustness(**kwargs):
    """A RobustnessCallback that also computes corruption_accuracy on the same samples
    and model, at the moment of each check, for the cells it measured."""
    checks = []

    class Spy(RobustnessCallback):
        def run_check(self, trainer, module, images, targets, logits, *, final):
            result = super().run_check(trainer, module, images, targets, logits, final=final)
            cells = (
                result.accuracy
                if isinstance(result, RobustnessCells)
                else {
                    (c, s): a
                    for c, row in result.accuracy.items()
                    for s, a in zip(result.severities, row, strict=True)
                }
            )
            expected = {
                (c, s): corruption_accuracy(
                    module, images, targets, corruptions=[c], severities=[s], seed=self.seed
                )
                for c, s in cells
            }
            checks.append((trainer.current_epoch, final, result, cells, expected))
            return result

    return Spy(**kwargs), checks


@pytest.mark.slow
def test_robustness_callback_equals_corruption_accuracy_on_the_same_samples(tmp_path, loaders):
    cb, checks = _spy_robustness(
        corruptions=["gaussian_blur", "contrast"], severities=[1, 5], budget=30, batch_size=16
    )
    module = ClassifierModule("small_cnn", 1, 3, learning_rate=5e-3)
    _trainer(tmp_path, [cb], epochs=1).fit(module, *loaders)
    [(_, final, result, cells, expected)] = checks
    assert final and isinstance(result, RobustnessResult)
    assert set(cells) == {(c, s) for c in ("gaussian_blur", "contrast") for s in (1, 5)}
    for cell, accuracy in cells.items():
        assert accuracy == expected[cell].accuracy[cell[0]][0], cell
        assert result.clean_accuracy == expected[cell].clean_accuracy
    # The whole grid in one call of the library function, on the final model.
    x = torch.cat([b[0] for b in loaders[1]])[:30]
    y = torch.cat([b[1] for b in loaders[1]])[:30]
    module.eval()
    whole = corruption_accuracy(
        module, x, y, corruptions=["gaussian_blur", "contrast"], severities=[1, 5], batch_size=16
    )
    assert result == whole
    assert 0.0 < whole.clean_accuracy  # a model that learned something, not a constant


@pytest.mark.slow
@pytest.mark.integration  # an MLflow logger
def test_interim_robustness_checks_measure_a_moving_share_and_log_no_means(tmp_path, loaders):
    logger, uri = _mlflow(tmp_path)
    cb, checks = _spy_robustness(
        corruptions=["gaussian_noise", "contrast"], budget=24, cells_per_epoch=3
    )
    _trainer(tmp_path, [cb], epochs=4, logger=logger).fit(
        ClassifierModule("small_cnn", 1, 3), *loaders
    )
    assert [(epoch, final) for epoch, final, *_ in checks] == [
        (0, False),
        (1, False),
        (2, False),
        (3, True),
    ]
    interim = [cells for _, final, _, cells, _ in checks if not final]
    assert all(len(cells) == 3 for cells in interim)
    # Three checks of three cells visit nine different cells of the ten.
    assert len(set().union(*interim)) == 9
    assert isinstance(checks[-1][2], RobustnessResult) and len(checks[-1][3]) == 10
    for _, _, result, cells, expected in checks:
        for (c, s), accuracy in cells.items():
            assert accuracy == expected[c, s].accuracy[c][0], (c, s)
            assert result.clean_accuracy == expected[c, s].clean_accuracy

    assert len(_history(uri, logger.run_id, "tai/robustness/clean_accuracy")) == 4
    assert len(_history(uri, logger.run_id, "tai/robustness/mean_corruption_accuracy")) == 1
    assert len(_history(uri, logger.run_id, "tai/robustness/contrast_mean")) == 1
    logged_cells = sum(
        len(_history(uri, logger.run_id, f"tai/robustness/{c}_s{s}"))
        for c in ("gaussian_noise", "contrast")
        for s in range(1, 6)
    )
    assert logged_cells == 9 + 10


@pytest.mark.slow
@pytest.mark.integration  # an MLflow logger
def test_an_unforeseen_end_of_the_fit_still_gets_the_final_check(tmp_path, loaders):
    """Early stopping decides after the checks of an epoch ran: the final check then runs
    in on_train_end, on the final weights, and is logged to the loggers."""

    class StopAfterFirstEpoch(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            trainer.should_stop = not trainer.sanity_checking

    logger, uri = _mlflow(tmp_path)
    cb, checks = _spy_robustness(corruptions=["contrast"], budget=20)
    trainer = _trainer(tmp_path, [cb, StopAfterFirstEpoch()], epochs=5, logger=logger)
    trainer.fit(ClassifierModule("small_cnn", 1, 3), *loaders)

    assert [(epoch, final) for epoch, final, *_ in checks] == [(0, False), (1, True)]
    _, _, result, cells, expected = checks[-1]
    assert isinstance(result, RobustnessResult) and len(cells) == 5
    for (c, s), accuracy in cells.items():
        assert accuracy == expected[c, s].accuracy[c][0]
    assert "tai/robustness/mean_corruption_accuracy" in trainer.callback_metrics
    assert len(_history(uri, logger.run_id, "tai/robustness/mean_corruption_accuracy")) == 1
    assert [f.path for f in MlflowClient(uri).list_artifacts(logger.run_id, "tai/robustness")] == [
        "tai/robustness/curve_epoch001.png"
    ]


def _expected_prototype_deletion(module, embed, loaders, *, method, n_steps, steps=20):
    """Prototypes (one per class) of all validation samples (within the default budget) and
    the mean deletion AUC of their attribution maps, by the tai functions on the final
    model: what the prototype callback must have logged."""
    x = torch.cat([b[0] for b in loaders[1]])
    y = torch.cat([b[1] for b in loaders[1]])
    module.eval()
    with torch.no_grad():
        embeddings = embed(x).flatten(1)
    protos = select_prototypes(embeddings, y, per_class=1)
    chosen = torch.tensor(protos.all_indices())
    maps = attribute(module, x[chosen], y[chosen], method=method, n_steps=n_steps)
    deletion = deletion_auc(
        module, x[chosen], maps.maps.expand_as(x[chosen]), y[chosen], steps=steps
    )
    return protos, deletion.mean


@pytest.mark.slow
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
            pass  # returns no logits: the callbacks compute them

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cb = PrototypeExplanationCallback(embedding_layer="body", n_steps=4, log_figures=False)
    plain = Plain()
    _trainer(tmp_path, [cb], epochs=1).fit(plain, *loaders)
    assert sorted(cb.last_result.prototypes.indices) == [0, 1, 2]
    # The embedding is the output of `body`; the rest as the tai functions compute it.
    expected = _expected_prototype_deletion(
        plain, lambda x: plain.body(x), loaders, method="integrated_gradients", n_steps=4
    )
    assert cb.last_result.prototypes.indices == expected[0].indices
    assert cb.last_result.deletion_auc == pytest.approx(expected[1], abs=1e-6)

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
            "`every_n_epochs` must be a positive integer or None, got 1.5",
        ),
        (
            lambda: RobustnessCallback(corruptions=["fog2"]),
            "`corruptions` must be a non-empty list of distinct names from .*gaussian_noise.*"
            "got \\['fog2'\\]",
        ),
        (
            lambda: RobustnessCallback(corruptions=["contrast", "contrast"]),
            "`corruptions` must be a non-empty list of distinct names.*got \\['contrast', 'contr",
        ),
        (
            lambda: RobustnessCallback(severities=[0, 6]),
            "`severities` must be a non-empty subset of 1..5, got \\[0, 6\\]",
        ),
        (
            lambda: RobustnessCallback(cells_per_epoch=0),
            "`cells_per_epoch` must be a positive integer or None, got 0",
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
            r"`epsilons` must be a non-empty list of distinct radii in \(0, 1\], "
            r"got \[0.1, 2.0\]",
        ),
        (
            lambda: AdversarialCallback(attacks=["cw"]),
            "`attacks` must be a non-empty subset of pgd, fgsm; got \\['cw'\\]",
        ),
        (
            lambda: AdversarialCallback(cells_per_epoch=-1),
            "`cells_per_epoch` must be a positive integer or None, got -1",
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


def test_grid_share_visits_the_whole_grid_before_repeating_a_cell():
    grid = [(c, s) for c in "abc" for s in (1, 2, 3, 4, 5)]
    shares = [grid_share(grid, 4, k, seed=0) for k in range(4)]
    assert all(len(share) == 4 for share in shares)
    assert len(set().union(*shares[:3])) == 12  # three shares, no cell twice
    assert grid_share(grid, 4, 0, seed=0) == shares[0]  # seeded: the same again
    assert grid_share(grid, 4, 0, seed=1) != shares[0]
    assert grid_share(grid, None, 3, seed=0) == grid
    assert grid_share(grid, 99, 3, seed=0) == grid
    assert all(share == sorted(share, key=grid.index) for share in shares)  # grid order


@pytest.mark.slow
@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_prototype_callback_takes_another_attribution_method(tmp_path, loaders, method):
    cb = PrototypeExplanationCallback(method=method, deletion_steps=4, log_figures=True)
    module = ClassifierModule("small_cnn", 1, 3)
    _trainer(tmp_path, [cb], epochs=1).fit(module, *loaders)
    protos, deletion = _expected_prototype_deletion(
        module, module.embed, loaders, method=method, n_steps=32, steps=4
    )
    assert cb.last_result.prototypes.indices == protos.indices
    assert cb.last_result.deletion_auc == pytest.approx(deletion, abs=1e-6)
    assert math.isnan(cb.last_result.convergence_delta)  # only Integrated Gradients has one


def _spy_adversarial(**kwargs):
    checks = []

    class Spy(AdversarialCallback):
        def run_check(self, trainer, module, images, targets, logits, *, final):
            results = super().run_check(trainer, module, images, targets, logits, final=final)
            expected = [
                adversarial_accuracy(
                    module,
                    images,
                    targets,
                    epsilons=r.epsilons,
                    attack=r.attack,
                    steps=self.steps,
                    seed=self.seed,
                )
                for r in results
            ]
            checks.append((trainer.current_epoch, final, results, expected, len(targets)))
            return results

    return Spy(**kwargs), checks


@pytest.mark.slow
def test_adversarial_callback_equals_the_tai_function_on_the_same_samples(tmp_path, loaders):
    cb, checks = _spy_adversarial(epsilons=[0.05, 0.2], steps=3, budget=24, log_figures=False)
    _trainer(tmp_path, [cb], epochs=2).fit(ClassifierModule("small_cnn", 1, 3), *loaders)
    # Attacks run on the last epoch only by default.
    [(epoch, final, results, expected, n)] = checks
    assert (epoch, final, n) == (1, True, 24)
    pgd, fgsm = cb.last_result
    assert (pgd.attack, fgsm.attack) == ("pgd", "fgsm")
    assert pgd.epsilons == fgsm.epsilons == (0.05, 0.2)
    assert [r.accuracy for r in results] == [e.accuracy for e in expected]
    assert pgd.accuracy[1] <= pgd.accuracy[0] <= pgd.clean_accuracy


@pytest.mark.slow
@pytest.mark.integration  # an MLflow logger
def test_interim_adversarial_checks_attack_one_cell_and_log_no_mean(tmp_path, loaders):
    logger, uri = _mlflow(tmp_path)
    cb, checks = _spy_adversarial(
        epsilons=[0.05, 0.2], steps=2, budget=16, every_n_epochs=1, cells_per_epoch=1
    )
    _trainer(tmp_path, [cb], epochs=3, logger=logger).fit(
        ClassifierModule("small_cnn", 1, 3), *loaders
    )
    assert [(epoch, final) for epoch, final, *_ in checks] == [(0, False), (1, False), (2, True)]
    for _, final, results, expected, _ in checks:
        cells = [(r.attack, e) for r in results for e in r.epsilons]
        assert len(cells) == (4 if final else 1)
        assert [r.accuracy for r in results] == [e.accuracy for e in expected]
    first, second = ((r.attack, r.epsilons) for _, _, [r], _, _ in checks[:2])
    assert first != second  # the share moves on
    assert len(_history(uri, logger.run_id, "tai/adversarial/pgd_mean_accuracy")) == 1
    assert len(_history(uri, logger.run_id, "tai/adversarial/fgsm_mean_accuracy")) == 1


@pytest.mark.slow
@pytest.mark.integration  # an MLflow logger
def test_an_error_while_drawing_a_figure_fails_the_fit(tmp_path, loaders, monkeypatch):
    def broken(result):
        raise RuntimeError("no canvas")

    monkeypatch.setattr(callbacks.calibration, "reliability_diagram", broken)
    logger, _ = _mlflow(tmp_path)
    with pytest.raises(RuntimeError, match="no canvas"):
        _trainer(tmp_path, [CalibrationCallback()], epochs=1, logger=logger).fit(
            ClassifierModule("small_cnn", 1, 3), *loaders
        )


def _tai_callbacks_for_ddp():
    return [
        CalibrationCallback(budget=40, log_figures=True),  # 40 of 45: a budget that cuts
        RobustnessCallback(  # 64 > 45: every sample, and none of the padding twice
            corruptions=["gaussian_noise", "contrast"], severities=[1, 3], budget=64
        ),
        AdversarialCallback(epsilons=[0.05, 0.2], steps=2, budget=30, every_n_epochs=1),
        PrototypeExplanationCallback(n_steps=4, deletion_steps=4, budget=64),
    ]


def _fit_for_ddp(tmp_path: Path, name: str, train: DataLoader, **trainer_kwargs):
    figures = tmp_path / name
    figures.mkdir()
    torch.manual_seed(0)
    model = TinyNet(lr=0.1)
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=_tai_callbacks_for_ddp(),
        logger=FigureFileLogger(figures),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        inference_mode=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        **trainer_kwargs,
    )
    trainer.fit(
        model,
        train,
        DataLoader(_squares(45, 1), batch_size=16),  # 45 on 2 processes: one padded
    )
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("tai/")}
    return metrics, model, sorted(p.name for p in figures.iterdir())


@pytest.mark.slow
def test_callbacks_under_ddp_report_what_one_process_reports(tmp_path):
    """Two CPU processes (ddp_spawn, gloo), each validating half of the 45 samples (one
    padded by DistributedSampler) and training on half of each batch, against one
    process that takes the same steps (``TwoRanksInOne``) on the same data: every metric
    of every callback agrees to 1e-5 (what may differ is only the float rounding of
    training on half-batches and of validation's batches), and the figures come from
    rank zero only, once each."""
    train = _squares(48, 0)
    one, one_model, one_figures = _fit_for_ddp(
        tmp_path, "one", DataLoader(train, batch_size=16, sampler=TwoRanksInOne(48, 8)), devices=1
    )
    two, two_model, two_figures = _fit_for_ddp(
        tmp_path, "two", DataLoader(train, batch_size=8), devices=2, strategy="ddp_spawn"
    )
    # The weights come back from rank zero; the same steps give the same model.
    two_weights = two_model.state_dict()
    for name, weight in one_model.state_dict().items():
        assert torch.allclose(weight, two_weights[name], atol=1e-6), name
    assert sorted(two) == sorted(one)
    assert {k.split("/")[1] for k in one} == {"calibration", "robustness", "adversarial", "explain"}
    assert len(one) >= 20
    for key, value in one.items():
        assert two[key] == pytest.approx(value, abs=1e-5, nan_ok=True), key
    assert one_figures == [
        "rank0-tai_adversarial_curve_epoch001.png",
        "rank0-tai_calibration_reliability_epoch000.png",
        "rank0-tai_calibration_reliability_epoch001.png",
        "rank0-tai_explain_prototypes_epoch001.png",
        "rank0-tai_robustness_curve_epoch001.png",
    ]
    assert two_figures == one_figures


@pytest.mark.slow
def test_prototype_callback_equals_the_tai_functions_on_the_same_samples(tmp_path, loaders):
    """Prototypes of the embeddings of the buffered samples (the first 30), Integrated
    Gradients of them and the deletion AUC of those maps, each computed again with the
    tai functions on the final model."""
    cb = PrototypeExplanationCallback(per_class=2, n_steps=8, deletion_steps=5, budget=30)
    module = ClassifierModule("small_cnn", 1, 3, learning_rate=5e-3)
    _trainer(tmp_path, [cb], epochs=1).fit(module, *loaders)

    x = torch.cat([b[0] for b in loaders[1]])[:30]
    y = torch.cat([b[1] for b in loaders[1]])[:30]
    module.eval()
    with torch.no_grad():
        embeddings = module.embed(x)
    protos = select_prototypes(embeddings, y, per_class=2)
    assert cb.last_result.prototypes.indices == protos.indices
    chosen = torch.tensor(protos.all_indices())
    maps = attribute(module, x[chosen], y[chosen], method="integrated_gradients", n_steps=8)
    expected = deletion_auc(module, x[chosen], maps.maps.expand_as(x[chosen]), y[chosen], steps=5)
    assert cb.last_result.deletion_auc == pytest.approx(expected.mean, abs=1e-6)
    assert cb.last_result.convergence_delta == pytest.approx(
        float(maps.convergence_delta.abs().mean()), abs=1e-6
    )


@pytest.mark.slow
def test_the_prototype_check_passes_at_most_its_batch_size_through_the_model(tmp_path, loaders):
    """The embeddings of the whole budget went through the model in one pass (512 images
    at 224x224: gigabytes during training); now every pass holds at most ``batch_size``."""
    module = ClassifierModule("small_cnn", 1, 3, learning_rate=5e-3)
    conv = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    passes: list[int] = []

    class Spy(PrototypeExplanationCallback):
        def run_check(self, trainer, *args, final):
            hook = conv.register_forward_pre_hook(lambda m, a: passes.append(len(a[0])))
            try:
                return super().run_check(trainer, *args, final=final)
            finally:
                hook.remove()

    cb = Spy(per_class=2, n_steps=8, deletion_steps=4, batch_size=8, log_figures=False)
    _trainer(tmp_path, [cb], epochs=1).fit(module, *loaders)
    assert sorted(set(cb.last_result.prototypes.indices)) and len(passes) > 10
    assert max(passes) <= 8, sorted(set(passes))


@pytest.mark.slow
@pytest.mark.parametrize("inference_mode", [False, True])
def test_the_final_check_holds_one_copy_of_the_samples_and_releases_the_buffer(
    tmp_path, loaders, monkeypatch, inference_mode
):
    """The buffer's views of the validation batches, the joined samples and a clone of
    them were all alive during the final check (0.9 GB at 224x224 with the default
    budget): now the check gets the joined tensor itself, as an ordinary tensor also
    under Lightning's default inference mode, and the buffer is empty once it ran."""
    from callbacks._base import SampleBuffer

    joined: list[int] = []
    tensors = SampleBuffer.tensors

    def recording(self):
        samples = tensors(self)
        if samples is not None:
            joined.append(samples[0].data_ptr())
        return samples

    monkeypatch.setattr(SampleBuffer, "tensors", recording)
    seen: list[tuple[int, bool, bool]] = []

    class Spy(PrototypeExplanationCallback):
        def run_check(self, trainer, pl_module, images, *args, final):
            seen.append((images.data_ptr(), images.is_inference(), self._buffer.size == 0))
            return super().run_check(trainer, pl_module, images, *args, final=final)

    cb = Spy(per_class=1, n_steps=4, deletion_steps=4, budget=24, log_figures=False)
    trainer = _trainer(tmp_path, [cb], epochs=1, inference_mode=inference_mode)
    trainer.fit(ClassifierModule("small_cnn", 1, 3), *loaders)
    assert seen == [(joined[-1], False, True)]
    assert cb._buffer.size == 0 and cb.last_result is not None


@pytest.mark.slow
def test_checks_run_channels_last_and_leave_a_users_fit_exactly_as_without_them(tmp_path, loaders):
    """A user's module with NCHW convolutions: each check (interim every epoch, then the
    final one) runs with channels-last weights, and the weights are put back, so the fit
    takes exactly the steps it takes without callbacks."""
    seen = []

    class Spy(RobustnessCallback):
        def run_check(self, trainer, module, images, targets, logits, *, final):
            seen.append(conv_layouts(module))
            return super().run_check(trainer, module, images, targets, logits, final=final)

    weights = []
    for cbs in ([], [Spy(corruptions=["contrast"], severities=[1], budget=16)]):
        pl.seed_everything(0, verbose=False)
        model = TinyNet()
        _trainer(tmp_path, cbs, epochs=3).fit(model, *loaders)
        assert conv_layouts(model) == ["nchw"]
        weights.append(model.state_dict())
    assert seen == [["nhwc"]] * 3  # two interim checks and the final one
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


@pytest.mark.slow
def test_the_classifier_module_trains_channels_last_on_the_cpu(tmp_path, loaders):
    module = ClassifierModule("small_cnn", 1, 3)
    assert conv_layouts(module) == ["nchw"] * 3
    _trainer(tmp_path, [], epochs=1).fit(module, *loaders)
    assert conv_layouts(module) == ["nhwc"] * 3
