"""The unselectable experiment's offline corpus, built in a fresh interpreter.

Run as a script (``python -I _stdlib_corpus.py``), it writes the corpus to stdout as UTF-8:
the docstrings of CORPUS_MODULES (each module, its public functions, classes and builtins,
and the classes' public methods), then the prose of the language reference that ships with
CPython for ``help()`` (``pydoc_data.topics``, in topic order), each text once (a docstring
that an override inherits or a re-export repeats appears at its first place only), separated
by blank lines. The text is kept as written -- case, punctuation, digits, code examples and
whitespace -- because the language models read it through a byte-level BPE (see
:mod:`pynorm.experiments._bpe`), which, as GPT-2's tokenizer did for the paper, needs no
reduced alphabet; the character-level models read the same text.

It is made only of what the interpreter holds, so it is the same on every run of a given
Python version and platform (docstrings change between versions, and a few modules document
platform-specific functions); a module that this build lacks (an optional C extension) is left
out. It runs in a process of its own because what a live module holds depends on what else was
imported: torch, for one, replaces ``inspect.getfile``, which would drop its docstring from a
corpus built in a process that had imported torch. It imports only the standard library.
"""

import importlib
import inspect
import sys
import warnings
from typing import Iterator

#: the original docstring corpus first, then the rest of the standard library that documents
#: itself in prose and imports without side effects (no GUI, terminal or platform-only modules)
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
    "builtins",
    "abc",
    "array",
    "ast",
    "asyncio.base_events",
    "asyncio.events",
    "asyncio.futures",
    "asyncio.locks",
    "asyncio.protocols",
    "asyncio.queues",
    "asyncio.runners",
    "asyncio.streams",
    "asyncio.subprocess",
    "asyncio.tasks",
    "asyncio.transports",
    "base64",
    "bdb",
    "binascii",
    "bz2",
    "calendar",
    "cmath",
    "cmd",
    "code",
    "codecs",
    "codeop",
    "collections.abc",
    "colorsys",
    "compileall",
    "concurrent.futures._base",
    "concurrent.futures.process",
    "concurrent.futures.thread",
    "configparser",
    "contextlib",
    "contextvars",
    "copy",
    "copyreg",
    "ctypes",
    "dbm",
    "dis",
    "doctest",
    "email.charset",
    "email.contentmanager",
    "email.feedparser",
    "email.generator",
    "email.header",
    "email.headerregistry",
    "email.parser",
    "email.policy",
    "email.utils",
    "filecmp",
    "fileinput",
    "fnmatch",
    "ftplib",
    "gc",
    "getopt",
    "getpass",
    "gettext",
    "glob",
    "graphlib",
    "gzip",
    "hashlib",
    "hmac",
    "html",
    "html.parser",
    "http.cookiejar",
    "http.cookies",
    "http.server",
    "imaplib",
    "importlib",
    "importlib.abc",
    "importlib.machinery",
    "importlib.metadata",
    "importlib.resources",
    "importlib.util",
    "io",
    "ipaddress",
    "keyword",
    "linecache",
    "locale",
    "logging.config",
    "logging.handlers",
    "lzma",
    "mailbox",
    "marshal",
    "math",
    "mimetypes",
    "mmap",
    "modulefinder",
    "multiprocessing.connection",
    "multiprocessing.context",
    "multiprocessing.managers",
    "multiprocessing.pool",
    "multiprocessing.process",
    "multiprocessing.queues",
    "multiprocessing.shared_memory",
    "multiprocessing.synchronize",
    "netrc",
    "numbers",
    "operator",
    "optparse",
    "pdb",
    "pickletools",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "pprint",
    "profile",
    "pstats",
    "py_compile",
    "pyclbr",
    "pydoc",
    "queue",
    "quopri",
    "re",
    "reprlib",
    "rlcompleter",
    "runpy",
    "sched",
    "secrets",
    "select",
    "selectors",
    "shelve",
    "shlex",
    "signal",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "stat",
    "struct",
    "symtable",
    "sys",
    "sysconfig",
    "tabnanny",
    "tarfile",
    "tempfile",
    "time",
    "timeit",
    "token",
    "tokenize",
    "trace",
    "traceback",
    "tracemalloc",
    "types",
    "unicodedata",
    "unittest.loader",
    "unittest.mock",
    "unittest.result",
    "unittest.runner",
    "unittest.suite",
    "urllib.error",
    "urllib.parse",
    "urllib.request",
    "urllib.response",
    "urllib.robotparser",
    "uuid",
    "venv",
    "warnings",
    "wave",
    "weakref",
    "webbrowser",
    "wsgiref.handlers",
    "wsgiref.headers",
    "wsgiref.simple_server",
    "wsgiref.util",
    "wsgiref.validate",
    "xml.dom.minidom",
    "xml.dom.pulldom",
    "xml.etree.ElementTree",
    "xml.sax.handler",
    "xml.sax.saxutils",
    "xml.sax.xmlreader",
    "xmlrpc.client",
    "xmlrpc.server",
    "zipapp",
    "zipfile",
    "zipimport",
    "zlib",
    "zoneinfo",
)


def docstrings() -> Iterator[str]:
    """The docstrings of CORPUS_MODULES as this process holds them, in module order (within a
    module: its own, then its names in sorted order), repeats included."""
    with warnings.catch_warnings():  # some modules warn on import or attribute access
        warnings.simplefilter("ignore")
        for name in CORPUS_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:  # an optional extension this build lacks
                continue
            yield inspect.getdoc(module) or ""
            for key, value in sorted(vars(module).items()):
                if key.startswith("_") or not (inspect.isroutine(value) or inspect.isclass(value)):
                    continue
                if getattr(value, "__module__", None) != module.__name__:
                    continue
                yield inspect.getdoc(value) or ""
                if inspect.isclass(value):
                    for k, v in sorted(vars(value).items()):
                        if not k.startswith("_") and inspect.isroutine(v):
                            yield inspect.getdoc(v) or ""


def topics() -> Iterator[str]:
    """The language reference's ``help()`` topics, in sorted topic order."""
    from pydoc_data.topics import topics as texts

    return (texts[key] for key in sorted(texts))


def corpus() -> str:
    """The corpus text: every docstring, then every topic, each distinct non-empty text once,
    separated by blank lines."""
    texts = (text.strip() for source in (docstrings(), topics()) for text in source)
    return "\n\n".join(dict.fromkeys(text for text in texts if text))


if __name__ == "__main__":
    sys.stdout.buffer.write(corpus().encode("utf-8"))
