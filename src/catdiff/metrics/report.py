"""How results are written: Markdown tables of metric rows, and one envelope (command, commit,
machine, load, date, config) with one writer for every benchmark's JSON and Markdown page.

It must not know models, methods, datasets or what the numbers mean: it formats what it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["format_table"]


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return _cell(v.item())
    return str(v).replace("|", "\\|").replace("\n", " ")


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Markdown table of `rows` restricted to `columns` (in that order).

    Floats are shown with 4 significant digits (`{:.4g}`), ints and strings as is, missing keys
    and None as empty cells; `|` in strings is escaped. Ends without a trailing newline.
    """
    lines = [
        "| " + " | ".join(_cell(c) for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)
