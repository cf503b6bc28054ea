"""Nucleus modules (seed 004 §2.4): sync (redirection, merge, split) and audit."""

from __future__ import annotations

from corec_tasks.modules.audit import Anomaly, AuditModule, AuditRow, find_anomalies
from corec_tasks.modules.base import Module
from corec_tasks.modules.sync import (
    Merge,
    Move,
    RedirectError,
    Split,
    SyncModule,
    merge,
    plan_merges,
    plan_redirections,
    plan_splits,
    redirect,
    split,
)

__all__ = [
    "Anomaly",
    "AuditModule",
    "AuditRow",
    "Merge",
    "Module",
    "Move",
    "RedirectError",
    "Split",
    "SyncModule",
    "find_anomalies",
    "merge",
    "plan_merges",
    "plan_redirections",
    "plan_splits",
    "redirect",
    "split",
]
