"""P1's experiments at tiny sizes (seconds each) and the run/report infrastructure."""

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from pynorm import experiments  # noqa: E402
from pynorm.cli import main  # noqa: E402
from pynorm.experiments import _report, layerwise, power_method, readme_table  # noqa: E402


@pytest.fixture(scope="module")
def power_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("power-method")
    cfg = power_method.Config.tiny()
    return out, cfg, experiments.run_experiment("power-method", out=out, cfg=cfg, progress=False)


@pytest.fixture(scope="module")
def layerwise_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("layerwise")
    return out, experiments.run_experiment("layerwise", out=out, cfg=layerwise.Config.tiny(), progress=False)


def test_power_method_moves_toward_the_power_method(power_run):
    _, _, record = power_run
    m = record["metrics"]
    # from the exact structured init the off-block entries stay exactly zero (invariant set)
    assert m["off_block_energy_ratio_exact_init"] < 1e-12
    # training lowers the loss toward the L-step power method's and aligns with it
    assert m["power_method_loss"] < m["test_loss"] < 0.9 * m["initial_test_loss"]
    assert m["cos_to_power_method"] > 0.55
    assert m["w"] > power_method.Config.tiny().init_w and m["v"] > power_method.Config.tiny().init_v
    assert m["growth_slope"] > 0


def test_power_method_writes_figures_and_resumes(power_run):
    out, cfg, record = power_run
    assert set(record["figures"]) == {"power_method_weights.png", "power_method_loss.png"}
    for name in record["figures"]:
        assert (out / name).stat().st_size > 1000
    # a finished run is resumed from its checkpoint: no training, same numbers
    again = power_method.run(cfg, out, progress=False)
    assert again["metrics"]["test_loss"] == pytest.approx(record["metrics"]["test_loss"], rel=1e-6)
    assert again["metrics"]["w"] == pytest.approx(record["metrics"]["w"], rel=1e-6)


def test_power_method_resume_matches_uninterrupted(tmp_path):
    cfg = dataclasses.replace(power_method.Config.tiny(), steps=40, probe_steps=10, n_points=4)
    whole = power_method.run(cfg, tmp_path / "whole", progress=False)["metrics"]
    power_method.run(dataclasses.replace(cfg, steps=20), tmp_path / "split", progress=False)
    resumed = power_method.run(cfg, tmp_path / "split", progress=False)["metrics"]
    assert resumed["w"] == pytest.approx(whole["w"], rel=1e-6)
    assert resumed["test_loss"] == pytest.approx(whole["test_loss"], rel=1e-6)


def test_layerwise_ln_beats_both_no_ln_arms(layerwise_run):
    _, record = layerwise_run
    m = record["metrics"]
    fl = m["final_loss"]
    assert fl["ln"] < 0.2 * min(fl["no_ln_normalized_target"], fl["no_ln_unnormalized_target"])
    # LN contracts at about lambda2/lambda1 per loop; without LN strictly slower
    assert abs(m["contraction_ln"] - m["eigen_ratio"]) < 0.1
    assert m["contraction_no_ln_normalized_target"] > m["contraction_ln"] + 0.02
    assert m["contraction_no_ln_unnormalized_target"] > m["contraction_ln"] + 0.02
    assert m["eigen_ratio"] < 0.6
    errors = m["angular_error"]
    assert len(errors["ln"]) == layerwise.Config.tiny().max_loops
    assert errors["ln"][-1] < errors["no_ln_normalized_target"][-1]


def test_scalar_layer_gradient_matches_finite_differences():
    cfg = layerwise.Config.tiny()
    exp = layerwise.arm_experiment(dataclasses.replace(cfg, n_train=8, n_test=4), "ln", 0)
    model, loss, batch = exp.model, exp.loss, exp.train

    def value():
        model.train(False)
        result = loss(model(batch["X"], batch["a"]), batch["target"])
        model.train(True)
        return result

    model.zero_grad()
    loss(model(batch["X"], batch["a"]), batch["target"])
    model.backward(loss.backward())
    for name in ("w", "v"):
        h = 1e-6
        model.params[name][0] += h
        up = value()
        model.params[name][0] -= 2 * h
        down = value()
        model.params[name][0] += h
        assert model.grads[name][0] == pytest.approx((up - down) / (2 * h), rel=1e-5)


def test_results_json_and_report(layerwise_run):
    out, record = layerwise_run
    data = json.loads((out / "results.json").read_text())
    assert data["name"] == "layerwise" and data["status"] == "ok"
    for key in ("metrics", "comparisons", "figures", "config", "seeds", "versions", "wall_time_s", "mode"):
        assert key in data
    assert {"pynorm", "numpy"} <= set(data["versions"])
    assert all(c["verdict"] in experiments.VERDICTS for c in data["comparisons"])
    report = (out / "report.md").read_text()
    assert "| quantity | pynorm | paper | verdict | note |" in report
    assert "![layerwise.png](layerwise.png)" in report
    table = readme_table.table(readme_table.find_results([str(out)]))
    assert table.count("\n") == len(data["comparisons"]) + 1


def test_registry_reports_missing_modules(monkeypatch, tmp_path):
    monkeypatch.setitem(experiments.EXPERIMENTS, "ghost", "pynorm.experiments.does_not_exist")
    with pytest.raises(experiments.ExperimentUnavailable, match="not available"):
        experiments.load("ghost")
    assert experiments.available()["ghost"].startswith("ghost: not available")
    records = _report.run_all("quick", out=tmp_path, progress=False, names=["ghost"], log=lambda *a: None)
    assert records["ghost"]["status"] == "not available"
    assert "Not available" in (tmp_path / "report.md").read_text()


def test_contract_of_p1_modules():
    for module in (power_method, layerwise):
        assert module.NAME in experiments.EXPERIMENTS
        for mode in ("quick", "full"):
            cfg = getattr(module.Config, mode)()
            assert isinstance(cfg.seeds, tuple) and cfg.seeds
        assert _report.make_config(module, "quick", [3, 4]).seeds == (3, 4)


def test_cli_run(tmp_path, monkeypatch, capsys):
    tiny = power_method.Config.tiny()
    monkeypatch.setattr(power_method.Config, "quick", classmethod(
        lambda cls: dataclasses.replace(tiny, steps=20, probe_steps=5, n_points=3)))
    out = tmp_path / "pm"
    assert main(["run", "power-method", "--quick", "--seeds", "1", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["seeds"] == [1] and data["mode"] == "quick"
    assert "power-method" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "power-method", "--quick", "--full"])


def test_json_sanitising():
    assert _report.to_jsonable({"a": np.float32(1.5), "b": float("nan"), "c": (1, np.int64(2))}) == \
        {"a": 1.5, "b": None, "c": [1, 2]}
