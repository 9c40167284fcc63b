"""Office and data documents as text, and text as documents: what the rubric tools and graders use.

`render(name, data)` shows a file the way an agent (or a judge) can read it: spreadsheets sheet by
sheet as grids with column letters and row numbers (a formula shows its cached value, or the formula
when no value was ever computed), Word documents as paragraphs with `#` headings and tables as pipe
rows, JSON pretty-printed, other text as is. `build(name, content)` makes a file from text: for .xlsx,
CSV text (one sheet) or a JSON object {sheet name: [[cell, ...], ...]} where strings starting with
`=` become formulas and numeric strings numbers; for .docx, lines with `#` headings, `- ` bullets and
`|` table rows; anything else is written as the text itself. Parsing happens on the host (openpyxl,
python-docx), in a child process under memory, CPU and time limits, after the archive's sizes and
XML parts were checked (check_archive): a document bomb is an error message, not a host stall.

Not guaranteed: formatting (fonts, merged cells, styles), charts, images, tracked changes, .xls/.doc.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
import zlib
from pathlib import PurePosixPath
from typing import Any

from agentsd.envs.limited import run_limited

MAX_ROWS = 200
MAX_COLS = 30
MAX_RENDER_CHARS = 200_000
MAX_MEMBERS = 10_000
MAX_UNPACKED_MEMBER = 64 << 20
MAX_UNPACKED_TOTAL = 128 << 20
_BLOCK = 1 << 20
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
    """The document as text for an agent or a judge; DocumentError says why it cannot be shown.
    Spreadsheets and Word documents are checked as archives and parsed in a limited child process
    (envs/limited.py): nothing an agent writes can make this process unpack or hold more than the
    limits below."""
    kind = suffix(name)
    if kind in SPREADSHEETS | WORD:
        return run_limited(_render_office, kind, data, sheet, error=DocumentError, what=name)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise DocumentError(f"{name}: not UTF-8 text and not a spreadsheet or Word document") from None
    if kind == ".json":
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):  # invalid, nested past the parser, or huge numbers
            return text
    return text


def _render_office(kind: str, data: bytes, sheet: str | None) -> str:
    check_archive(data)
    text = _render_xlsx(data, sheet) if kind in SPREADSHEETS else _render_docx(data)
    if len(text) > MAX_RENDER_CHARS:
        text = text[:MAX_RENDER_CHARS] + f"\n[cut at {MAX_RENDER_CHARS} characters]"
    return text


def check_archive(data: bytes) -> None:
    """Refuse an OOXML archive before any parser sees it: too many members, members or a total that
    unpack (as declared and as actually inflated) past the bounds, or XML with a document type
    declaration (entity expansion: OOXML parts never declare one)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DocumentError(f"not a readable Office document (not a zip archive: {exc})") from None
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise DocumentError(f"too many parts ({len(members)} > {MAX_MEMBERS})")
    declared = sum(m.file_size for m in members)
    if declared > MAX_UNPACKED_TOTAL or any(m.file_size > MAX_UNPACKED_MEMBER for m in members):
        raise DocumentError(
            f"document too large when unpacked ({declared >> 20} MiB declared; limits "
            f"{MAX_UNPACKED_MEMBER >> 20} MiB per part, {MAX_UNPACKED_TOTAL >> 20} MiB in all)"
        )
    total = 0
    for member in members:
        size, tail = 0, b""
        xml = member.filename.lower().endswith((".xml", ".rels", ".vml"))
        try:
            with archive.open(member) as stream:
                while block := stream.read(_BLOCK):
                    size += len(block)
                    total += len(block)
                    if size > member.file_size or size > MAX_UNPACKED_MEMBER or total > MAX_UNPACKED_TOTAL:
                        raise DocumentError(
                            f"document too large when unpacked (part {member.filename} inflates past its "
                            "declared size or the limits)"
                        )
                    if xml:
                        window = (tail + block).lower()
                        if b"<!doctype" in window or b"<!entity" in window:
                            raise DocumentError(
                                f"part {member.filename} declares a document type (XML entities are refused)"
                            )
                        tail = block[-16:]
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, ValueError) as exc:
            if isinstance(exc, DocumentError):
                raise
            raise DocumentError(f"part {member.filename} cannot be unpacked ({exc})") from None


def open_workbook(data: bytes, *, values: bool, read_only: bool = False) -> Any:
    """An openpyxl workbook of bytes already passed through check_archive (XML through defusedxml,
    which openpyxl uses when installed)."""
    import openpyxl

    try:
        return openpyxl.load_workbook(io.BytesIO(data), data_only=values, read_only=read_only)
    except Exception as exc:  # openpyxl raises zipfile, KeyError, InvalidFileException...
        raise DocumentError(f"not a readable .xlsx workbook ({exc.__class__.__name__}: {exc})") from None


def cell_display(value: Any, formula: Any) -> Any:
    """The cell's value; a formula never computed (no cached value) shows as its formula."""
    if value is None and isinstance(formula, str) and formula.startswith("="):
        return formula
    return value


def _render_xlsx(data: bytes, only: str | None) -> str:
    from openpyxl.utils import get_column_letter

    # read-only workbooks stream rows: only the shown corner of each sheet is ever parsed
    values = open_workbook(data, values=True, read_only=True)
    formulas = open_workbook(data, values=False, read_only=True)
    names = values.sheetnames
    if only is not None and only not in names:
        raise DocumentError(f"no sheet {only!r}; the sheets are {', '.join(names)}")
    out = []
    for title in [only] if only else names:
        ws, wf = values[title], formulas[title]
        rows, cols = ws.max_row, ws.max_column
        out.append(f"## sheet {title} ({rows or '?'} rows x {cols or '?'} columns)")
        shown_cols = min(cols or MAX_COLS, MAX_COLS)
        out.append("\t".join(["", *(get_column_letter(c) for c in range(1, shown_cols + 1))]))
        window = {"min_row": 1, "max_row": MAX_ROWS, "min_col": 1, "max_col": shown_cols, "values_only": True}
        for r, (row_values, row_formulas) in enumerate(
            zip(ws.iter_rows(**window), wf.iter_rows(**window), strict=False), 1
        ):
            cells = [cell_display(v, f) for v, f in zip(row_values, row_formulas, strict=False)]
            out.append("\t".join([str(r), *("" if v is None else str(v) for v in cells)]))
        if (rows or 0) > MAX_ROWS or (cols or 0) > MAX_COLS:
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
    """The file `name` made from the agent's text; DocumentError says why it cannot be. Office
    documents are built in the limited child too: the content is the agent's."""
    kind = suffix(name)
    if kind in SPREADSHEETS | WORD:
        return run_limited(_build_office, kind, content, error=DocumentError, what=name)
    return content.encode(errors="surrogateescape")


def _build_office(kind: str, content: str) -> bytes:
    return _build_xlsx(content) if kind in SPREADSHEETS else _build_docx(content)


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
    except (ValueError, RecursionError) as exc:  # huge integers, nesting past the parser
        raise DocumentError(f"xlsx content: JSON that cannot be read ({str(exc)[:200]})") from None
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
        try:
            sheet = workbook.create_sheet(str(title)[:31])
            for row in rows:
                sheet.append([_cell(v) for v in row])
        except (ValueError, TypeError) as exc:  # a title or a value a workbook cannot hold
            raise DocumentError(f"xlsx content: sheet {str(title)[:31]!r}: {str(exc)[:200]}") from None
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
