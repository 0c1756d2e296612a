"""Chapter 1's run functions, including the `full` (CIFAR, ResNet-18) path on tiny fake data."""

import dataclasses

import pytest
from test_vision import fake_cifar10

from lossbook import presets, vision
from lossbook.chapters import compsum as C


def tiny(cfg, **kw):
    return dataclasses.replace(cfg, **kw)


def test_smoke_specs_cover_the_grid():
    cfg = C.PRESETS["smoke"]
    specs = C.loss_specs(cfg, 0, "cpu")
    assert len(specs) == len(cfg.tasks) * len(cfg.taus) * cfg.seeds
    adv = C.adv_specs(cfg, 0, "cpu")
    assert {s["method"] for s in adv} == set(C.ADV_METHODS)


def test_class_count_specs_share_the_loss_runs():
    """One generator at every class count; at gmm_classes the runs are the loss sweep's."""
    cfg = C.PRESETS["book"]
    count = C.count_specs(cfg, 0, "cpu")
    assert {s["task"] for s in count} == {"gmm"}
    assert sorted({s["gmm_classes"] for s in count}) == [10, 30, 100]
    shared = [s for s in count if s["gmm_classes"] == cfg.gmm_classes]
    loss = C.loss_specs(cfg, 0, "cpu")
    assert shared and all(s in loss for s in shared)
    small = C.task_data({**shared[0], "gmm_classes": 10})
    large = C.task_data(shared[0])
    assert small.num_classes == 10 and large.num_classes == 100
    assert len(small.y_train) == 10 * cfg.gmm_train_per_class


def strip_time(result):
    return {**result, "history": [{k: v for k, v in h.items() if k != "time_s"}
                                  for h in result["history"]]}


@pytest.mark.parametrize("method,weight", [("standard", 0.0), ("pgd_at", 0.0), ("trades", 6.0),
                                           ("adv_comp_sum", 0.3)])
def test_batched_adversarial_training_equals_one_by_one(method, weight):
    """The stacked twin (attacks on the stacked model, per-model early stopping, stacked final
    attacks) gives every seed exactly — bit for bit — what `adv_run` gives it alone."""
    cfg = tiny(C.PRESETS["smoke"], mnist1d_samples=500, adv_epochs=3, adv_seeds=3,
               trades_betas=(weight,), advcs_nus=(weight,), adv_train_steps=3,
               adv_eval_steps=4, adv_eval_restarts=2, adv_val_size=64, adv_val_steps=2,
               batch_size=64)
    specs = [s for s in C.adv_specs(cfg, 5, "cpu") if s["method"] == method]
    assert [s["seed"] for s in specs] == [5, 6, 7]
    alone = [C.adv_run(s) for s in specs]
    together = C.adv_run.batched(specs)
    for a, b in zip(alone, together):
        assert strip_time(a) == strip_time(b)
        assert len(a["history"]) == 3 and 0 <= a["robust_acc"] <= a["clean_acc"]
        assert a["robust_acc"] <= min(a["robust_margin"], a["robust_ce"])
    if method != "standard":  # early stopping restored each model's own best epoch
        for r in alone:
            assert r["selected"] == max(h["val_robust"] for h in r["history"])
    assert len({r["clean_acc"] for r in alone}) > 1  # the seeds differ


def test_loss_run_is_deterministic():
    cfg = tiny(C.PRESETS["smoke"], epochs=1, mnist1d_samples=300)
    spec = C.loss_specs(cfg, 0, "cpu")[0]
    a, b = C.loss_run(spec), C.loss_run(spec)
    assert a["test_acc"] == b["test_acc"] and 0 <= a["test_acc"] <= 1


def test_noisy_task_flips_labels():
    cfg = tiny(C.PRESETS["smoke"], mnist1d_samples=500, noise_rate=0.4)
    spec = {**C.base_spec(cfg, "mnist1d_noisy", 0, "cpu"), "tau": 1.0}
    clean = C.task_data({**spec, "task": "mnist1d"})
    noisy = C.task_data(spec)
    rate = (clean.y_train != noisy.y_train).float().mean().item()
    assert 0.3 < rate < 0.5
    assert (clean.y_test == noisy.y_test).all()


def test_full_preset_one_step_on_fabricated_cifar(tmp_path, monkeypatch):
    """The `full` code path (CIFAR archive → ResNet-18 → SGD + crop/flip → PGD eval) on CPU."""
    archive = tmp_path / vision.DATASETS["cifar10"].files["archive"].filename
    fake_cifar10(archive, n=4)
    monkeypatch.setattr(vision.DATASETS["cifar10"].files["archive"], "md5",
                        vision.file_digest(archive))
    cfg = presets.resolve("01_compsum", "full", {
        "tasks": ["cifar10"], "taus": [1.0], "seeds": 1, "epochs": 1, "batch_size": 8,
        "width": 4, "data_dir": str(tmp_path), "download": False, "eval_every": 1,
        "adv_epochs": 1, "adv_train_steps": 1, "adv_eval_steps": 1, "adv_val_size": 4,
        "adv_val_steps": 1, "trades_betas": [6.0], "advcs_nus": [1.0], "adv_seeds": 1,
        "adv_eval_restarts": 1, "adv_contrast_steps": 1})
    assert cfg.model == "resnet18" and cfg.adv_clamp == (0.0, 1.0)
    result = C.loss_run(C.loss_specs(cfg, 0, "cpu")[0])
    assert result["history"][-1]["step"] == 2  # 20 fabricated images / batch 8
    for spec in C.adv_specs(cfg, 0, "cpu"):
        out = C.adv_run(spec)
        assert 0 <= out["robust_acc"] <= 1 and 0 <= out["clean_acc"] <= 1


def test_full_preset_without_data_names_the_download(tmp_path):
    cfg = presets.resolve("01_compsum", "full", {"data_dir": str(tmp_path), "download": False})
    spec = {**C.loss_specs(cfg, 0, "cpu")[0], "width": 4}
    with pytest.raises(FileNotFoundError, match="cifar-10-binary.tar.gz"):
        C.loss_run(spec)


def test_unknown_adversarial_method():
    spec = C.adv_specs(C.PRESETS["smoke"], 0, "cpu")[0]
    with pytest.raises(ValueError, match="valid: standard, pgd_at, trades, adv_comp_sum"):
        C.adv_losses({**spec, "method": "fgsm_at"}, None, None, None, [])
