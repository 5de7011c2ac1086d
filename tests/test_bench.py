"""pynorm.bench: every norm op times at a small shape, rows carry their SIMD level, the
per-level table and the argument checks."""

import json

import pytest

import pynorm
import pynorm.bench as pb


def test_run_small_shape_every_op():
    results = pb.run(pb.NORM_OPS, shapes=[(8, 64)], dtype="float32", threads=1, progress=lambda line: None)
    assert [(r.op, r.pass_) for r in results] == [(op, p) for op in pb.NORM_OPS for p in ("forward", "backward")]
    for r in results:
        assert r.simd == pynorm.simd_level() and r.pynorm_s > 0 and r.bound_s > 0
        assert r.row()["simd"] == r.simd


def test_simd_levels_in_child_processes(tmp_path, capsys):
    levels = pynorm.config()["simd_levels_supported"]
    path = tmp_path / "bench.json"
    assert pb.main(["--ops", "rms_norm", "--shapes", "4x32", "--simd", "all", "--threads", "1",
                    "--json", str(path), "--markdown"]) == 0  # fmt: skip
    rows = json.loads(path.read_text())["results"]
    assert sorted({row["simd"] for row in rows}) == sorted(levels)
    assert len(rows) == 2 * len(levels)  # forward and backward per level
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| op")][-1]
    for level in levels:
        assert f"of bound, {level}" in header or len(levels) == 1


@pytest.mark.parametrize("argv", [["--simd", "no-such-level"], ["--shapes", "4by32"], ["--threads", "0"]])
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as error:
        pb.main(["--ops", "rms_norm"] + argv)
    assert error.value.code == 2
