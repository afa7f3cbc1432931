"""A lesson's record (the server's ``class.export``) written as JSON or as one long CSV table.

The CSV is in long form: one row per record, a ``kind`` column saying what it is (``message``,
``poll``, ``vote``, ``hand``, ``checkpoint``, ``attendance``, ``moderation``) and the union of
every kind's fields as the other columns, so a spreadsheet or ``pandas.read_csv`` can filter by
kind without knowing the shapes. Lists and objects (a poll's options, its counts, a multiple
choice) are JSON in their cell. Votes get rows of their own (kind ``vote``, with the poll's id);
an anonymous poll has none — the server never sends who voted what in one.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

#: The export's lists, and the ``kind`` of their rows.
KINDS = {
    "messages": "message",
    "polls": "poll",
    "hands": "hand",
    "checkpoints": "checkpoint",
    "attendance": "attendance",
    "moderation": "moderation",
}
FORMATS = (".csv", ".json")


def export_format(path: str | Path) -> str:
    """``.csv`` or ``.json`` from the file name; ``ValueError`` for anything else (checked before the call)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"export to a .csv or a .json file, not {str(path)!r}")
    return suffix


def rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The export as long-form rows, each with its ``kind`` first."""
    out: list[dict[str, Any]] = []
    for key, kind in KINDS.items():
        for record in data.get(key) or []:
            if not isinstance(record, dict):
                continue
            if kind == "poll":
                votes = record.get("votes") or []
                out.append({"kind": kind, **{k: v for k, v in record.items() if k != "votes"}})
                out += [{"kind": "vote", "poll": record.get("id"), **vote} for vote in votes if isinstance(vote, dict)]
            else:
                out.append({"kind": kind, **record})
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "" if value is None else value


def write(data: dict[str, Any], path: str | Path) -> Path:
    """Write the export to ``path`` (``.json`` as is, ``.csv`` in long form); returns the path."""
    target = Path(path)
    if export_format(target) == ".json":
        target.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        return target
    table = rows(data)
    columns: list[str] = ["kind"]
    for row in table:
        columns += [column for column in row if column not in columns]
    with target.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for row in table:
            writer.writerow({column: _cell(row.get(column)) for column in columns})
    return target
