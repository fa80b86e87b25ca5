"""Tables as text for reports."""

from __future__ import annotations

import pandas as pd


def markdown(table: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs tabulate, which capml does not pin)."""
    cells = [list(map(str, table.columns))] + table.astype(str).values.tolist()
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in table.columns) + "|")
    return "\n".join(lines) + "\n"
