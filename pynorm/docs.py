"""The generated parts of the documentation, from the JSON files that measured them:

    python -m pynorm.docs            # rewrite docs/benchmarks.md, docs/reproductions.md and
                                     # the README's generated blocks
    python -m pynorm.docs --check    # exit 1 if any of them differs from what the JSON gives

Sources: docs/bench_norms.json (``pynorm bench ... --json``: the norm kernels),
docs/bench.json (the linear-attention and matmul cases), docs/bench_cuda.json
(``python -m pynorm.bench_cuda --json``: the CUDA kernels), docs/results/*/results.json
(``pynorm run <experiment> --full``). A README block is the text between
``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``; nothing between them is typed by
hand, so no figure in the README or in those pages can drift from its measurement. The test
suite runs the check.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
from typing import Callable, Dict, List, Optional

from . import bench
from .experiments import reproductions

#: The shapes the README summarises (the streamed ones; the tiny and long-row shapes get their own columns).
LARGE_SHAPES = ((16384, 1024), (4096, 4096), (65536, 256))
LONG_ROW_SHAPE = (64, 262144)


def _span(values: List[float], fmt: str = "{:.2f}") -> str:
    """'lo-hi' of ``values`` ('-' if none)."""
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def norm_headline(data: dict) -> str:
    """A table per SIMD level: fraction of the copy bound, lowest-highest over the norm ops
    (LayerNorm, its halves, RMSNorm, DyT), and the speedup over torch on the tiny shape."""
    rows = data["results"]
    levels = list(dict.fromkeys(r["simd"] for r in rows))

    def pick(level, pass_, dtype, shapes, key="fraction_of_bound"):
        return [
            r[key]
            for r in rows
            if r["simd"] == level
            and r["pass"] == pass_
            and r["dtype"] == dtype
            and tuple(r["shape"]) in shapes
            and r.get(key) is not None
        ]

    tiny = bench.TINY_SHAPE
    lines = [
        "| SIMD level | float32 forward | float32 backward | bfloat16 forward | bfloat16 backward | "
        f"[{LONG_ROW_SHAPE[0]}x{LONG_ROW_SHAPE[1]}] fwd / bwd | tiny [{tiny[0]}x{tiny[1]}] x torch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        cells = [
            _span(pick(level, p, d, LARGE_SHAPES)) for d in ("float32", "bfloat16") for p in ("forward", "backward")
        ]
        long_row = " / ".join(_span(pick(level, p, "float32", (LONG_ROW_SHAPE,))) for p in ("forward", "backward"))
        speedups = pick(level, "forward", "float32", (tiny,), "speedup") + pick(
            level, "backward", "float32", (tiny,), "speedup"
        )
        lines.append(f"| {level} | " + " | ".join(cells) + f" | {long_row} | {_span(speedups, '{:.1f}')}x |")
    meta = data.get("meta", {})
    return "\n".join(lines) + (
        f"\n\nFractions of a copy of the same bytes timed in the same run (backward: 1.5 copies); "
        f"lowest-highest over the ops at {', '.join('x'.join(map(str, s)) for s in LARGE_SHAPES)}; "
        f"{meta.get('cpu', 'CPU unknown')}, {meta.get('threads', '?')} threads, "
        f"{meta.get('date', 'date unknown')}."
    )


def _la_row(rows: List[dict], case: str) -> Optional[dict]:
    return next((r for r in rows if r["case"].startswith(case)), None)


def attention_headline(data: dict) -> str:
    """Linear attention's rate against NumPy's float32 matmul and torch's forms, same run."""
    rows = data.get("linear_attention") or []
    matmul = _la_row(rows, "numpy matmul")
    causal = _la_row(rows, "pynorm causal fwd+bwd")
    if not (matmul and causal):
        return "No linear-attention run recorded."
    rate = lambda r: r["flops"] / r["seconds"] / 1e9  # noqa: E731
    chunked = _la_row(rows, "torch chunked (C=64, autograd) fwd+bwd")
    quadratic = _la_row(rows, "torch quadratic masked")
    parts = [
        f"causal forward+backward ({causal['case'].split('fwd+bwd ')[-1]}) at {rate(causal):.0f} GFLOP/s, "
        f"{rate(causal) / rate(matmul):.2f} of NumPy's float32 matmul ({rate(matmul):.0f} GFLOP/s) in the same run"
    ]
    if chunked:
        parts.append(f"{chunked['seconds'] / causal['seconds']:.1f}x torch's chunked form")
    if quadratic:
        parts.append(f"{quadratic['seconds'] / causal['seconds']:.0f}x its quadratic form")
    level = data.get("config", {}).get("simd_level", "?")
    return (
        "Linear attention: " + ", ".join(parts) + f" ({level}, {data.get('config', {}).get('threads', '?')} threads)."
    )


def benchmarks_page(norms: dict, norms_path: str, attention: dict, attention_path: str) -> str:
    """docs/benchmarks.md: the norm table (pynorm.bench.render) and the linear-attention table."""
    page = bench.render_data(norms, norms_path)
    rows = attention.get("linear_attention") or []
    config = attention.get("config", {})
    page += (
        "\n# Linear attention and the trainer's products\n\n"
        f"From `{attention_path}` (`pynorm bench --ops linear_attention --json {attention_path}`), "
        f"SIMD level {config.get('simd_level', '?')}, {config.get('threads', '?')} threads; speedup: the other "
        "side's time over pynorm's, same run.\n\n"
        "| case | time | GFLOP/s | speedup |\n|---|---:|---:|---:|\n"
    )
    for r in rows:
        seconds = r["seconds"]
        time_text = f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"
        rate = f"{r['flops'] / seconds / 1e9:.1f}" if r["flops"] else ""
        ratio = f"{seconds / r['pynorm_seconds']:.2f}x" if r["pynorm_seconds"] else ""
        page += f"| {r['case']} | {time_text} | {rate} | {ratio} |\n"
    return page


#: Which paper of ../shared/PAPERS.md each experiment reproduces.
PAPER_OF = {
    "power-method": "P1",
    "layerwise": "P1",
    "majority": "P2",
    "unselectable": "P2",
    "dyt": "P3",
    "norm-efficiency": "P3",
}


def reproductions_headline(root: pathlib.Path) -> str:
    """One row per experiment of the registry: the verdict counts and wall time of its
    committed --full run, or that it has none yet."""
    from .experiments import EXPERIMENTS

    lines = [
        "| experiment | paper | reproduced | partial | not reproduced | wall time of its last invocation |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in EXPERIMENTS:
        path = root / name / "results.json"
        if not path.is_file():
            lines.append(f"| {name} | {PAPER_OF.get(name, '?')} | - | - | - | no full run committed yet |")
            continue
        result = json.loads(path.read_text())
        verdicts = [c["verdict"] for c in result["comparisons"]]
        lines.append(
            f"| [{name}](docs/results/{name}/report.md) | {PAPER_OF.get(name, '?')} | "
            + " | ".join(str(verdicts.count(v)) for v in ("reproduced", "partial", "not reproduced"))
            + f" | {result['wall_time_s'] / 60:.0f} min ({result['mode']}) |"
        )
    return "\n".join(lines)


def cuda_table(data: dict) -> str:
    """docs/cuda.md's measurements: each norm pass as a fraction of the device's copy bound, the
    whole call (host included) and the kernels alone, beside torch; linear attention in ms."""

    def cell(row: dict, name: str) -> str:
        v = row["of_bound"].get(name)
        return "-" if v is None else f"{v:.2f}"

    lines = [
        f"Measured on {data['device']} ({data['command']}); {data['provenance']}.",
        "",
        "Per call on a 1x32 float32 row (host time): "
        + ", ".join(f"{k} {v:.0f} us" for k, v in data["call_overhead_us"].items())
        + ".",
        "",
        "| op | pass | shape | dtype | pynorm call | pynorm kernels | torch call | torch kernels |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    attention = []
    for r in data["results"]:
        shape = "x".join(map(str, r["shape"]))
        if r["op"] == "linear_attention":
            ms = {k: (None if v is None else v * 1e3) for k, v in r["seconds"].items() if k != "flops"}
            attention.append(
                f"| {r['pass']} | {shape} | {r['dtype']} | {ms['pynorm']:.2f} | {ms['torch_chunked']:.2f} |"
            )
            continue
        lines.append(
            f"| {r['op']} | {r['pass']} | {shape} | {r['dtype']} | {cell(r, 'pynorm')} | {cell(r, 'pynorm kernels')}"
            f" | {cell(r, 'torch')} | {cell(r, 'torch kernels')} |"
        )
    lines += ["", "Causal linear attention (ms per call):", ""]
    lines += [
        "| pass | shape (batch x heads x tokens x dim) | dtype | pynorm | torch chunked |",
        "|---|---|---|---:|---:|",
    ]
    return "\n".join(lines + attention)


def generated(root: pathlib.Path) -> Dict[str, str]:
    """Path (relative to ``root``) -> its generated content; README blocks as 'README.md#NAME'."""
    norms_path, attention_path, results = "docs/bench_norms.json", "docs/bench.json", root / "docs" / "results"
    norms = json.loads((root / norms_path).read_text())
    attention = json.loads((root / attention_path).read_text())
    cuda = json.loads((root / "docs" / "bench_cuda.json").read_text())
    return {
        "docs/cuda.md#gpu": cuda_table(cuda),
        "docs/benchmarks.md": benchmarks_page(norms, norms_path, attention, attention_path),
        "docs/reproductions.md": reproductions.page(pathlib.Path("docs/results"), results),
        "README.md#benchmarks": norm_headline(norms) + "\n\n" + attention_headline(attention),
        "README.md#reproductions": reproductions_headline(results),
    }


def _replace_block(text: str, name: str, content: str) -> str:
    pattern = re.compile(rf"(<!-- generated: {re.escape(name)} -->\n)(?:.*?\n)?(<!-- end: {re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no block '<!-- generated: {name} -->' ... '<!-- end: {name} -->'")
    return pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), text)


def updated_files(root: pathlib.Path) -> Dict[str, str]:
    """Path -> the whole new text of every generated file (the README with its blocks replaced)."""
    files: Dict[str, str] = {}
    for key, content in generated(root).items():
        path, _, block = key.partition("#")
        if block:
            files[path] = _replace_block(files.get(path, (root / path).read_text()), block, content)
        else:
            files[path] = content
    return files


def main(argv: Optional[List[str]] = None, write: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m pynorm.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale; write nothing")
    parser.add_argument("--root", default=".", help="the repository root (default: the current folder)")
    args = parser.parse_args(argv)
    root = pathlib.Path(args.root)
    stale = []
    for path, text in updated_files(root).items():
        if (root / path).read_text() != text:
            stale.append(path)
            if not args.check:
                (root / path).write_text(text)
    if args.check and stale:
        write(f"stale: {', '.join(stale)} (regenerate with python -m pynorm.docs)")
        return 1
    write(("rewrote " + ", ".join(stale)) if stale else "generated docs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
