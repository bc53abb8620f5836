"""Which source a config names, read into one :class:`~distill.data.table.Table`.

Sources (``DataConfig.source``): ``packaged:<name>`` (:mod:`distill.data.packaged`), a local ``.csv``,
``.jsonl``, ``.json`` or (causal LM text only) ``.txt`` file (:mod:`distill.data.files`), and
``hf:<dataset id>[:<config>]`` (:mod:`distill.data.hub`).
"""

from __future__ import annotations

from pathlib import Path

from distill.config import DataConfig
from distill.data.files import file_table
from distill.data.hub import hf_table, hf_text_table
from distill.data.packaged import packaged_table
from distill.data.table import Table


def read_table(cfg: DataConfig, labelled: bool = True) -> Table:
    """The configured source's usable rows; ``labelled=False`` reads the text alone (causal LM)."""
    source = cfg.source.strip()
    if source.startswith("packaged:"):
        return packaged_table(source.removeprefix("packaged:"))
    if source.startswith("hf:"):
        spec = source.removeprefix("hf:")
        return hf_table(spec, cfg) if labelled else hf_text_table(spec, cfg)
    return file_table(Path(source).expanduser(), cfg, labelled)
