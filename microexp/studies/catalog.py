"""Every study ``microexp study NAME`` runs: name -> builder ``(options, recipes_dir) -> Study``."""

from __future__ import annotations

from microexp.studies import dfme, dfme_tasks, leaderboard, transfer

__all__ = ["STUDIES"]

STUDIES = {**dfme.STUDIES, **dfme_tasks.STUDIES, **leaderboard.STUDIES, **transfer.STUDIES}
