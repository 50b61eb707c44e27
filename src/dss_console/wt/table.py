"""itksnap-wt's text tables: FormattedTable's padded columns and the server's CSV.

FormattedTable (Logic/WorkspaceAPI/FormattedTable.cxx) left-aligns every cell, the last
one included, to the widest cell of its column plus two spaces, so each printed row ends
in spaces. Scripts split these rows with awk, so the padding is reproduced exactly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

__all__ = ["format_table", "parse_csv"]


def format_table(rows: Sequence[Sequence[str]], prefix: str = "",
                 columns: Sequence[bool] | None = None) -> list[str]:
    """Rows as FormattedTable prints them; ``columns`` filters which columns are shown."""
    widths: list[int] = []
    for row in rows:
        for i, cell in enumerate(row):
            if i < len(widths):
                widths[i] = max(widths[i], len(cell))
            else:
                widths.append(len(cell))
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i] + 2) for i, cell in enumerate(row)
                 if columns is None or (i < len(columns) and columns[i])]
        lines.append(prefix + "".join(cells))
    return lines


def parse_csv(text: str) -> list[list[str]]:
    """The server's header-less CSV as rows of strings (never numbers)."""
    return [row for row in csv.reader(io.StringIO(text, newline="")) if row]
