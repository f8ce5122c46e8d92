"""A composite clip table: several annotation sheets (one dataset each) read into one table.

Cross-dataset protocols (leave-one-dataset-out, train on A and test on B) need the clips of several
datasets in one table, with the dataset of every clip known and subject ids that no two datasets share.
Datasets number their subjects independently (CASME II's ``sub01`` and SAMM's ``006`` would both be small
integers), so every part's subjects are moved into a range of their own: part ``i`` (0-based) gets
``(i + 1) * SUBJECT_OFFSET + subject``, the scheme of the MEGC 2019 composite's public lists (10000,
20000, ...) with a wider step so that a part may itself be such a composite. Clip ids are prefixed with
their dataset (``casme2/sub01/EP02_01f``), so they stay unique and say where a clip comes from. Each clip
keeps where it came from in ``source_dataset`` (the sheet's own dataset name, which class maps are keyed by,
whatever the entry calls its dataset) and ``source_subject`` (the sheet's subject id): the keys that match a
clip with the same subject in another table (a pretraining pool, a checkpoint's record).

Nothing here reads files: the parts are tables already read and validated by :func:`load_clip_table`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import pandas as pd

from microexp.errors import ConfigError

__all__ = ["SUBJECT_OFFSET", "TablePart", "compose_tables"]

#: the width of each part's subject-id range
SUBJECT_OFFSET = 100_000


class TablePart(NamedTuple):
    """One sheet's validated table and what to call its dataset.

    ``source`` names the part in messages (e.g. ``data.annotations[1] (casme2/CASME2-coding.xlsx)``);
    ``dataset`` replaces the table's own dataset column when given (two parts of the same format, e.g. two
    synthetic sets, need names of their own).
    """

    source: str
    table: pd.DataFrame
    dataset: str | None = None


def compose_tables(parts: Sequence[TablePart]) -> pd.DataFrame:
    """Concatenate the parts into one clip table with per-part subject ranges and dataset-prefixed clip ids.

    Raises:
        ConfigError: a part is empty, has a clip without a dataset name, has subject ids outside
            ``0 .. SUBJECT_OFFSET - 1``, or shares a dataset name with another part.
    """
    if not parts:
        raise ConfigError("a composite table needs at least one annotation file")
    owners: dict[str, str] = {}
    tables = []
    for index, part in enumerate(parts):
        table = part.table.copy()
        if table.empty:
            raise ConfigError(f"{part.source}: no clip left after validation")
        if "source_dataset" not in table.columns:  # a part that is itself a composite keeps its sources
            table["source_dataset"] = table["dataset"].fillna("").astype(str)
            table["source_subject"] = table["subject"].astype("int64")
        if part.dataset is not None:
            table["dataset"] = part.dataset
        names = table["dataset"].fillna("").astype(str)
        if (names == "").any():
            raise ConfigError(f"{part.source}: {int((names == '').sum())} clip(s) have no dataset name; give the "
                              "entry a dataset: NAME")
        for name in sorted(set(names)):
            if name in owners:
                raise ConfigError(f"{part.source}: dataset name {name!r} is also the name of {owners[name]}; give "
                                  "each entry a distinct dataset: NAME")
            owners[name] = part.source
        subjects = table["subject"].astype("int64")
        outside = subjects[(subjects < 0) | (subjects >= SUBJECT_OFFSET)]
        if len(outside):
            raise ConfigError(f"{part.source}: subject id {int(outside.iloc[0])} is outside 0..{SUBJECT_OFFSET - 1}, "
                              "the range each part of a composite table keeps")
        table["subject"] = subjects + (index + 1) * SUBJECT_OFFSET
        table["clip"] = names + "/" + table["clip"].astype(str)
        table["dataset"] = names
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
