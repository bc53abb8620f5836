"""JSON from users (API bodies, form fields), refused when nested deeper than any kdweb input needs.

``json.loads`` recurses once per level: a body nested a few thousand levels deep raises ``RecursionError``
(a 500), and a thousand levels that still parse make every later walk over the value (validation, the
database's JSON) as deep. The depth is counted first, without recursion, and a value too deep is refused as
a ``json.JSONDecodeError``, the error the callers already turn into a message.
"""

from __future__ import annotations

import json
import re
from typing import Any

# a run's sections are about 4 levels deep (sections.student.layer_map[i][j]); 32 leaves room to spare
MAX_DEPTH = 32
# strings are skipped whole (a bracket inside one does not nest); what remains are brackets
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def too_deep(text: str, max_depth: int = MAX_DEPTH) -> int | None:
    """The offset at which ``text`` opens more than ``max_depth`` nested arrays or objects, else None."""
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > max_depth:
                return match.start()
        elif token in ("]", "}"):
            depth -= 1
    return None


def loads(text: str, max_depth: int = MAX_DEPTH, **kwargs: Any) -> Any:
    """``json.loads(text, **kwargs)``, or ``json.JSONDecodeError`` for a value nested more than ``max_depth``
    levels."""
    if (at := too_deep(text, max_depth)) is not None:
        raise json.JSONDecodeError(f"nested more than {max_depth} levels deep", text, at)
    return json.loads(text, **kwargs)
