"""The neutral seam types, re-exported: they live in ``engine/source.py`` (both sources use
them); this module keeps the v6 side's imports short and stable."""

from __future__ import annotations

from dss_console.engine.source import (
    Connection,
    NewWork,
    Outcome,
    OutcomeKind,
    RemoteState,
    SourceEvent,
    WorkGone,
)

__all__ = ["Connection", "NewWork", "Outcome", "OutcomeKind", "RemoteState", "SourceEvent",
           "WorkGone"]
