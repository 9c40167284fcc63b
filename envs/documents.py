"""Office and data documents as text, and text as documents: what the rubric tools and graders use.

`render(name, data)` shows a file the way an agent (or a judge) can read it: spreadsheets sheet by
sheet as grids with column letters and row numbers (a formula shows its cached value, or the formula
when no value was ever computed), Word documents as paragraphs with `#` headings and tables as pipe
rows, JSON pretty-printed, other text as is. `build(name, content)` makes a file from text: for .xlsx,
CSV text (one sheet) or a JSON object {sheet name: [[cell, ...], ...]} where strings starting with
`=` become formulas and numeric strings numbers; for .docx, lines with `#` headings, `- ` bullets and
`|` table rows; anything else is written as the text itself. Parsing happens on the host (openpyxl,
python-docx), never inside the sandbox.

Not guaranteed: formatting (fonts, merged cells, styles), charts, images, tracked changes, .xls/.doc.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import PurePosixPath
from typing import Any

MAX_ROWS = 200
MAX_COLS = 30
SPREADSHEETS = {".xlsx", ".xlsm"}
WORD = {".docx"}


class DocumentError(ValueError):
    """A document that cannot be read or built, with what was wrong."""


def suffix(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


def is_binary_format(name: str) -> bool:
    return suffix(name) in SPREADSHEETS | WORD


# ---------------------------------------------------------------------------------------- reading


def render(name: str, data: bytes, *, sheet: str | None = None) -> str:
    kind = suffix(name)
    if kind in SPREADSHEETS:
        return _render_xlsx(data, sheet)
    if kind in WORD:
        return _render_docx(data)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise DocumentError(f"{name}: not UTF-8 text and not a spreadsheet or Word document") from None
    if kind == ".json":
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except json.JSONDecodeError:
            return text
    return text


def open_workbook(data: bytes, *, values: bool) -> Any:
    import openpyxl

    try:
        return openpyxl.load_workbook(io.BytesIO(data), data_only=values)
    except Exception as exc:  # openpyxl raises zipfile, KeyError, InvalidFileException...
        raise DocumentError(f"not a readable .xlsx workbook ({exc.__class__.__name__}: {exc})") from None


def cell_display(value_cell: Any, formula_cell: Any) -> Any:
    """The cell's value; a formula never computed (no cached value) shows as its formula."""
    if (
        value_cell.value is None
        and isinstance(formula_cell.value, str)
        and formula_cell.value.startswith("=")
    ):
        return formula_cell.value
    return value_cell.value


def _render_xlsx(data: bytes, only: str | None) -> str:
    from openpyxl.utils import get_column_letter

    values, formulas = open_workbook(data, values=True), open_workbook(data, values=False)
    names = values.sheetnames
    if only is not None and only not in names:
        raise DocumentError(f"no sheet {only!r}; the sheets are {', '.join(names)}")
    out = []
    for title in [only] if only else names:
        ws, wf = values[title], formulas[title]
        rows, cols = ws.max_row, ws.max_column
        out.append(f"## sheet {title} ({rows} rows x {cols} columns)")
        shown_cols = min(cols, MAX_COLS)
        out.append("\t".join(["", *(get_column_letter(c) for c in range(1, shown_cols + 1))]))
        for r in range(1, min(rows, MAX_ROWS) + 1):
            cells = [cell_display(ws.cell(r, c), wf.cell(r, c)) for c in range(1, shown_cols + 1)]
            out.append("\t".join([str(r), *("" if v is None else str(v) for v in cells)]))
        if rows > MAX_ROWS or cols > MAX_COLS:
            out.append(f"[only the first {MAX_ROWS} rows and {MAX_COLS} columns are shown]")
    return "\n".join(out)


def _render_docx(data: bytes) -> str:
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:
        raise DocumentError(f"not a readable .docx document ({exc.__class__.__name__}: {exc})") from None
    out = []
    for paragraph in document.paragraphs:
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        text = paragraph.text
        if style.startswith("Heading"):
            level = int(style.split()[-1]) if style.split()[-1].isdigit() else 1
            out.append("#" * level + " " + text)
        elif style.startswith("List"):
            out.append("- " + text)
        else:
            out.append(text)
    for number, table in enumerate(document.tables, 1):
        out.append(f"\n[table {number}]")
        for row in table.rows:
            out.append("| " + " | ".join(cell.text for cell in row.cells) + " |")
    return "\n".join(out).strip()


# ---------------------------------------------------------------------------------------- writing


def build(name: str, content: str) -> bytes:
    kind = suffix(name)
    if kind in SPREADSHEETS:
        return _build_xlsx(content)
    if kind in WORD:
        return _build_docx(content)
    return content.encode()


def _cell(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("="):
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return value


def _build_xlsx(content: str) -> bytes:
    import openpyxl

    try:
        parsed = json.loads(content)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        sheets = parsed
    elif parsed is None:
        sheets = {"Sheet1": list(csv.reader(io.StringIO(content)))}
    else:
        raise DocumentError("xlsx content: give CSV text or a JSON object {sheet name: [[cells], ...]}")
    workbook = openpyxl.Workbook()
    for default in list(workbook.worksheets):  # the empty sheet a new workbook starts with
        workbook.remove(default)
    for title, rows in sheets.items():
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise DocumentError(f"xlsx content: sheet {title!r} must be a list of rows (lists of cells)")
        sheet = workbook.create_sheet(str(title)[:31])
        for row in rows:
            sheet.append([_cell(v) for v in row])
    if not workbook.sheetnames:
        workbook.create_sheet("Sheet1")
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _build_docx(content: str) -> bytes:
    import docx

    document = docx.Document()
    table_rows: list[list[str]] = []

    def flush_table() -> None:
        if not table_rows:
            return
        width = max(len(r) for r in table_rows)
        table = document.add_table(rows=len(table_rows), cols=width)
        for r, row in enumerate(table_rows):
            for c, text in enumerate(row):
                table.cell(r, c).text = text
        table_rows.clear()

    for line in content.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1:
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):  # skip markdown separator rows
                table_rows.append(cells)
            continue
        flush_table()
        if stripped.startswith("#"):
            level = len(stripped) - len(stripped.lstrip("#"))
            document.add_heading(stripped[level:].strip(), level=min(level, 9))
        elif stripped.startswith(("- ", "* ")):
            document.add_paragraph(stripped[2:], style="List Bullet")
        elif stripped:
            document.add_paragraph(stripped)
    flush_table()
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()
