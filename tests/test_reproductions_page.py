"""docs/reproductions.md is generated from results.json files: every comparison appears, a |
inside a cell is escaped, and a folder without full runs says so."""

import json

from pynorm.experiments import reproductions


def test_page_lists_every_comparison(tmp_path):
    root = tmp_path / "results"
    (root / "power-method").mkdir(parents=True)
    result = {
        "name": "power-method",
        "paper": "P1",
        "mode": "full",
        "status": "ok",
        "config": {"d": 16},
        "seeds": [0],
        "wall_time_s": 600.0,
        "started": "s",
        "finished": "f",
        "comparisons": [
            {"name": "mean |cos|", "ours": 0.5, "paper": 1, "verdict": "partial", "note": "n"},
            {"name": "slope", "ours": 0.25, "paper": 0.25, "verdict": "reproduced", "note": ""},
        ],
    }
    (root / "power-method" / "results.json").write_text(json.dumps(result))
    page = reproductions.page(root)
    assert "## power-method (full)" in page and "wall time 10 min" in page
    assert "| mean \\|cos\\| | 0.5 | 1 | **partial** | n |" in page
    assert "**reproduced**" in page


def test_page_without_runs(tmp_path):
    assert "No full run" in reproductions.page(tmp_path)
