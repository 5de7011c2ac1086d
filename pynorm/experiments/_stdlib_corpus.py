"""The unselectable experiment's offline corpus, built in a fresh interpreter.

Run as a script (``python -I _stdlib_corpus.py``), it prints the docstrings of
CORPUS_MODULES (the modules, their public functions and classes, and the classes' public
methods), lower-cased and reduced to letters, ``.``, ``,``, ``'``, newline and space. It runs
in a process of its own because what a live module holds depends on what else was imported:
torch, for one, replaces ``inspect.getfile``, which would drop its docstring from a corpus
built in a process that had imported torch. It imports only the standard library.
"""

import importlib
import inspect
import re
import sys
import warnings

CORPUS_MODULES = (
    "collections",
    "functools",
    "itertools",
    "json",
    "string",
    "textwrap",
    "heapq",
    "bisect",
    "random",
    "statistics",
    "fractions",
    "decimal",
    "datetime",
    "pathlib",
    "argparse",
    "logging",
    "email.message",
    "http.client",
    "unittest.case",
    "typing",
    "dataclasses",
    "enum",
    "inspect",
    "pickle",
    "csv",
    "difflib",
    "shutil",
    "subprocess",
    "threading",
    "os",
)


def corpus() -> str:
    """The corpus text, from this process's modules."""
    parts = []
    with warnings.catch_warnings():  # some modules warn on attribute access (typing.io, ...)
        warnings.simplefilter("ignore")
        for name in CORPUS_MODULES:
            module = importlib.import_module(name)
            parts.append(inspect.getdoc(module) or "")
            for key, value in sorted(vars(module).items()):
                if key.startswith("_") or not (inspect.isfunction(value) or inspect.isclass(value)):
                    continue
                if getattr(value, "__module__", None) != module.__name__:
                    continue
                parts.append(inspect.getdoc(value) or "")
                if inspect.isclass(value):
                    parts.extend(
                        inspect.getdoc(v) or ""
                        for k, v in sorted(vars(value).items())
                        if not k.startswith("_") and inspect.isfunction(v)
                    )
    text = "\n".join(parts).lower()
    text = re.sub(r"[^a-z.,'\n ]", " ", text)
    return re.sub(r" +", " ", text)


if __name__ == "__main__":
    sys.stdout.write(corpus())
