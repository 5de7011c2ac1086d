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
    assert set(record["figures"]) == {"power_method_weights.png", "power_method_loss.png", "power_method_diagnosis.png"}
    for name in record["figures"]:
        assert (out / name).stat().st_size > 1000
    # a finished run is resumed from its checkpoint: no training, same numbers
    again = power_method.run(cfg, out, progress=False)
    assert again["metrics"]["test_loss"] == pytest.approx(record["metrics"]["test_loss"], rel=1e-6)
    assert again["metrics"]["w"] == pytest.approx(record["metrics"]["w"], rel=1e-6)


def test_power_method_diagnosis_covers_every_noise_and_loss_form(power_run):
    out, cfg, record = power_run
    rows = record["metrics"]["diagnosis"]
    assert sorted((r["relative_noise"], r["loss_form"]) for r in rows) == sorted(
        (x, form) for x in cfg.diag_noises for form in ("normalized", "plain")
    )
    for form in ("normalized", "plain"):
        mine = sorted((r for r in rows if r["loss_form"] == form), key=lambda r: r["relative_noise"])
        # the exact structured init stays in the invariant set: no off-block energy at all
        assert mine[0]["relative_noise"] == 0
        assert mine[0]["initial_off_block_ratio"] == 0 and mine[0]["final_off_block_ratio"] == 0
        assert mine[0]["off_exceeds_in_step"] is None and mine[0]["off_block_growing_most"] is None
        # more noise starts further off the structured set
        initial = [r["initial_off_block_ratio"] for r in mine]
        assert all(a < b for a, b in zip(initial, initial[1:]))
        assert [r["absolute_noise"] for r in mine] == pytest.approx([r["relative_noise"] * cfg.init_w for r in mine])
    # each run kept its own resumable folder, with every block's energy traced
    trace = (out / "train" / "seed0" / "diag" / "0.001_plain" / "trace.jsonl").read_text().splitlines()
    assert {"W_tl", "W_tr", "V_bl", "V_br", "test_sin2", "test_readout_norm"} <= set(json.loads(trace[-1]))
    assert json.loads(trace[-1])["step"] == cfg.diag_steps


def test_power_method_report_shows_the_diagnosis(power_run):
    out, _, record = power_run
    report = (out / "report.md").read_text()
    assert "## Diagnosis: training from the structured init plus noise" in report
    assert report.count("| 0 | 0.001 | 1.000e-04 |") == 2  # one row per loss form
    probe_note = record["comparisons"][0]["note"]
    assert "Diagnosis table" in probe_note and probe_note.endswith(record["tables"][0]["note"])


def test_diagnosis_finding_names_the_noises_that_grow():
    def row(noise, form, initial, final, step=None):
        return {
            "relative_noise": noise,
            "loss_form": form,
            "initial_off_block_ratio": initial,
            "final_off_block_ratio": final,
            "off_exceeds_in_step": step,
        }

    rows = [
        row(0.0, "normalized", 0.0, 0.0),
        row(1e-3, "normalized", 1e-4, 1e-5),
        row(1e-2, "normalized", 1e-2, 2.0, 300),
        row(0.0, "plain", 0.0, 0.0),
        row(1e-3, "plain", 1e-4, 0.5),
        row(1e-2, "plain", 1e-2, 3.0, 90),
    ]
    text = power_method.diagnosis_finding(rows, 500)
    assert "(500 steps" in text
    assert (
        "normalized loss the off-block ratio grew at relative noise 0.01 and overtook the in-block energy at "
        "0.01 (step 300)" in text
    )
    assert (
        "plain loss the off-block ratio grew at relative noise 0.001, 0.01 and overtook the in-block energy at "
        "0.01 (step 90)" in text
    )


def test_block_energies_split_the_matrices():
    d = 2
    W, V = np.zeros((4, 4)), np.zeros((4, 4))
    W[0, 3], V[3, 0], V[0, 0] = 2.0, 1.0, 3.0
    energy = power_method.block_energies(W, V, d)
    assert energy == {"W_tl": 0, "W_tr": 4, "W_bl": 0, "W_br": 0, "V_tl": 9, "V_tr": 0, "V_bl": 1, "V_br": 0}
    assert power_method.block_stats(W, V, d)["off_block_energy_ratio"] == pytest.approx(9 / 5)


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
    monkeypatch.setattr(
        power_method.Config,
        "quick",
        classmethod(lambda cls: dataclasses.replace(tiny, steps=20, probe_steps=5, n_points=3)),
    )
    out = tmp_path / "pm"
    assert main(["run", "power-method", "--quick", "--seeds", "1", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["seeds"] == [1] and data["mode"] == "quick"
    assert "power-method" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "power-method", "--quick", "--full"])


def test_json_sanitising():
    assert _report.to_jsonable({"a": np.float32(1.5), "b": float("nan"), "c": (1, np.int64(2))}) == {
        "a": 1.5,
        "b": None,
        "c": [1, 2],
    }
