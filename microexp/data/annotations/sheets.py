"""Annotation files as raw rows: every sheet of an xlsx/xls workbook, or the one 'sheet' of a CSV/TSV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from microexp.errors import AnnotationError

__all__ = ["Sheet", "read_sheets"]


@dataclass(frozen=True)
class Sheet:
    """Raw rows of one sheet; ``rows[i]`` is spreadsheet row ``i + 1``."""

    name: str
    rows: list[list[object]]


def read_sheets(path: Path) -> list[Sheet]:
    """All sheets of an xlsx/xls file, or the one 'sheet' of a CSV/TSV, as raw rows.

    Raises:
        FileNotFoundError: nothing at ``path``.
        AnnotationError: an unsupported extension, a corrupt file, or text neither UTF-8 nor GB18030.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            return [Sheet(path.name, _read_csv_rows(path, "\t" if suffix == ".tsv" else ","))]
        if suffix in (".xlsx", ".xlsm", ".xls"):
            frames = pd.read_excel(path, header=None, dtype=object, sheet_name=None, keep_default_na=False)
            return [Sheet(str(name), df.astype(object).values.tolist()) for name, df in frames.items()]
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"annotation file not found: {path}") from exc
    except ImportError as exc:  # e.g. xlrd for .xls is not installed
        raise AnnotationError(f"cannot read {path}: {exc}; save it as .xlsx or .csv") from exc
    except AnnotationError:
        raise
    except _corrupt_file_errors(suffix) as exc:  # a corrupt or mislabelled file; anything else is a bug
        detail = " ".join(str(exc).split()) or "no detail"
        raise AnnotationError(f"cannot read {path}: not a valid {suffix.lstrip('.')} file "
                              f"({type(exc).__name__}: {detail})") from exc
    raise AnnotationError(f"cannot read {path}: unsupported extension {suffix!r} (expected .xlsx, .xls or .csv)")


def _corrupt_file_errors(suffix: str) -> tuple[type[BaseException], ...]:
    """The exceptions pandas' readers raise on a corrupt or mislabelled file of this kind.

    ``ValueError`` covers pandas' ParserError, "Excel file format cannot be determined" and decoding
    errors; for xlsx also a broken zip, broken XML and the ``KeyError`` of a zip without a workbook.
    """
    errors: list[type[BaseException]] = [ValueError, EOFError]
    if suffix in (".xlsx", ".xlsm", ".xls"):
        import xml.etree.ElementTree as ElementTree
        import zipfile

        errors += [zipfile.BadZipFile, ElementTree.ParseError, KeyError]
        try:
            from openpyxl.utils.exceptions import InvalidFileException

            errors.append(InvalidFileException)
        except ImportError:  # pragma: no cover - openpyxl is a dependency
            pass
    return tuple(errors)


def _read_csv_rows(path: Path, sep: str) -> list[list[object]]:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            df = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=False,
                             sep=sep, encoding=encoding)
        except UnicodeDecodeError:
            continue
        except pd.errors.EmptyDataError:
            return []
        return df.astype(object).values.tolist()
    raise AnnotationError(f"cannot read {path}: not UTF-8 or GB18030 text")
