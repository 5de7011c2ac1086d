"""Prints the README's results table (paper vs pynorm) from results.json files.

    python -m pynorm.experiments.readme_table results/ [more folders or results.json files]

Every ``results.json`` found (recursively) contributes its comparisons; rows are ordered as
the registry lists the experiments. Nothing in the table is typed by hand.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Iterable, List, Optional

from . import EXPERIMENTS
from ._report import RESULTS_FILE, fmt


def find_results(paths: Iterable[str]) -> List[dict]:
    records, seen = [], set()
    for path in map(pathlib.Path, paths):
        files = [path] if path.is_file() else sorted(path.rglob(RESULTS_FILE))
        for file in files:
            if file.resolve() in seen:
                continue
            seen.add(file.resolve())
            record = json.loads(file.read_text())
            record["_file"] = str(file)
            records.append(record)
    order = {name: i for i, name in enumerate(EXPERIMENTS)}
    return sorted(records, key=lambda r: (order.get(r.get("name"), len(order)), r["_file"]))


def table(records: List[dict]) -> str:
    lines = ["| experiment | quantity | paper | pynorm | verdict | mode, seeds |", "|---|---|---|---|---|---|"]
    for r in records:
        for c in r.get("comparisons", []):
            lines.append(
                f"| {r['name']} | {fmt(c['name'])} | {fmt(c['paper'])} | {fmt(c['ours'])} | "
                f"{fmt(c['verdict'])} | {r.get('mode')}, {r.get('seeds')} |"
            )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    records = find_results(args)
    if not records:
        print(f"no {RESULTS_FILE} found under {' '.join(args)}", file=sys.stderr)
        return 1
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
