"""The generated pages and README blocks (python -m pynorm.docs) match the committed JSON files,
so no figure in them was typed by hand or went stale."""

import json
import pathlib

import pytest

from pynorm import docs

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / "docs" / "bench_norms.json").is_file(), reason="not a repository checkout")
def test_committed_docs_are_what_the_json_files_give():
    messages = []
    assert docs.main(["--check", "--root", str(ROOT)], write=messages.append) == 0, messages


def test_check_reports_a_stale_block_and_the_rewrite_fixes_it(tmp_path):
    (tmp_path / "docs" / "results" / "layerwise").mkdir(parents=True)
    row = {
        "op": "rms_norm",
        "pass": "forward",
        "shape": [16384, 1024],
        "dtype": "float32",
        "bytes": 1,
        "pynorm_s": 1.0,
        "torch_s": 2.0,
        "bound_s": 0.9,
        "speedup": 2.0,
        "fraction_of_bound": 0.9,
        "simd": "avx2",
    }
    (tmp_path / "docs" / "bench_norms.json").write_text(json.dumps({"config": {"version": "x"}, "results": [row]}))
    (tmp_path / "docs" / "bench.json").write_text(json.dumps({"config": {}, "linear_attention": []}))
    cuda_row = {"op": "rms_norm", "pass": "forward", "shape": [8, 16], "dtype": "float32",
                "seconds": {"pynorm": 1e-5}, "of_bound": {"pynorm": 0.5, "pynorm kernels": 0.875}}  # fmt: skip
    cuda = {"device": "G", "command": "c", "provenance": "p", "call_overhead_us": {"a": 1.0}, "results": [cuda_row]}
    (tmp_path / "docs" / "bench_cuda.json").write_text(json.dumps(cuda))
    (tmp_path / "docs" / "cuda.md").write_text("# CUDA\n<!-- generated: gpu -->\n<!-- end: gpu -->\n")
    result = {
        "name": "layerwise",
        "paper": "P1",
        "mode": "full",
        "status": "ok",
        "config": {},
        "seeds": [0],
        "wall_time_s": 120.0,
        "started": "s",
        "finished": "f",
        "comparisons": [{"name": "q", "ours": 1, "paper": 1, "verdict": "reproduced", "note": ""}],
    }
    (tmp_path / "docs" / "results" / "layerwise" / "results.json").write_text(json.dumps(result))
    for page in ("benchmarks.md", "reproductions.md"):
        (tmp_path / "docs" / page).write_text("old\n")
    readme = (
        "# x\n<!-- generated: benchmarks -->\n| typed | by hand |\n<!-- end: benchmarks -->\n"
        "<!-- generated: reproductions -->\n<!-- end: reproductions -->\n"
    )
    (tmp_path / "README.md").write_text(readme)
    messages = []
    assert docs.main(["--check", "--root", str(tmp_path)], write=messages.append) == 1
    assert "README.md" in messages[-1] and "docs/benchmarks.md" in messages[-1]
    assert (tmp_path / "README.md").read_text() == readme  # --check writes nothing
    assert docs.main(["--root", str(tmp_path)], write=messages.append) == 0
    text = (tmp_path / "README.md").read_text()
    assert (
        "typed" not in text
        and "| avx2 | 0.90 |" in text
        and "| [layerwise](docs/results/layerwise/report.md) | P1 | 1 |" in text
    )
    assert "| majority | P2 | - |" in text  # experiments without a full run say so
    assert (
        "| rms_norm | forward | 8x16 | float32 | 0.50 | 0.88 | - | - |" in (tmp_path / "docs" / "cuda.md").read_text()
    )
    assert docs.main(["--check", "--root", str(tmp_path)], write=messages.append) == 0


def test_a_readme_without_the_block_is_an_error():
    with pytest.raises(ValueError, match="no block"):
        docs._replace_block("# README\n", "benchmarks", "x")
