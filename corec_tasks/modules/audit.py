"""Audit (seed 004 §2.4 ``ModuloAuditoria``): anomalous blocks, alerts on ``corec_alerts``.

Features per block, from its last run: fitness, error rate (errors / selected),
mean and spread (std) of its values, and size (``num_entidades / max_entities``).

Blocks are compared with their **peers**, the blocks running the same processor: a
security block's values are not a sensor block's, and pooling them would flag every
block of a small group on every run. Each feature is turned into a robust z-score
within its peers, ``(x - median) / max(1.4826 * MAD, floor)``; one IsolationForest
(fixed ``random_state``) is fitted over those z-scores of every block whose peer set
has at least ``min_blocks`` blocks. A block of a smaller set is compared with its
own history instead (:func:`own_history_anomalies`): a single security block that
starts failing is flagged too.

A run's features are noisy when it selected few entities (1 error in 2 is an
error rate of 0.5), so before scoring they are shrunk toward the peers' median by
``n / (n + SHRINK_ENTITIES)`` with ``n`` the entities the run selected (size is
exact and is not shrunk): a 1,000-entity run keeps 98% of its deviation, a
5-entity run 20%. Reasons quote the raw values.

A block is flagged when the forest isolates it (``contamination``, default
``"auto"``: the paper's score threshold 0.5, not a fixed share of blocks) **and**
some feature lies at least ``min_robust_z`` (4) robust deviations from its peers'
median. The forest alone flags 10-30% of a healthy population (its threshold is
relative to the population's own spread); the z-gate drops those, and names the reason: the features
furthest from the median. The floors keep near-constant features (all blocks the
same size) and binomial noise (1 error in 20 selected) from inflating z-scores:
with them a block must be, e.g., 0.2 below its peers' fitness or 20 points above
their error rate. A fixed ``contamination`` (e.g. 0.05) also works, the gate still
keeps healthy populations quiet; it caps how many of a mass failure are reported.

Each flagged (block, cycle) is alerted once: a marker key makes a rerun of the
audit over the same results publish nothing new.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from corec_tasks.blocks.store import BlockStore
from corec_tasks.errors import CorecError
from corec_tasks.modules.base import Module
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import ALERTS

log = logging.getLogger(__name__)

#: Feature names (AuditRow fields) and how a reason spells them.
FEATURES = ("fitness", "error_rate", "mean", "std", "size")
LABELS = {"fitness": "fitness", "error_rate": "error rate", "mean": "mean value",
          "std": "value spread", "size": "size (share of max_entities)"}  # fmt: skip
#: Floor of each feature's robust scale, in the feature's units (see the docstring).
SCALE_FLOOR = np.array([0.05, 0.05, 0.05, 0.025, 0.1])
#: A flagged block needs a feature this many robust deviations from its peers' median.
MIN_ROBUST_Z = 4.0
#: Pseudo-count of the shrinkage toward the peers' median (see the docstring).
SHRINK_ENTITIES = 20
#: Peer sets smaller than this are not audited (a median of few says little).
MIN_BLOCKS = 8
#: How long the alerted-once marker of a (block, cycle) lives.
ALERT_MARKER_TTL_S = 7 * 86400
_MAD_TO_SD = 1.4826  # MAD of a normal distribution times this is its sd

Contamination = float | Literal["auto"]


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One block's features, from its meta (see :meth:`from_meta`)."""

    block_id: str
    peer: str
    cycle: int
    #: Entities the last run selected (the evidence behind the other features).
    selected: int
    fitness: float
    error_rate: float
    mean: float
    std: float
    size: float

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> AuditRow | None:
        """The row of a block meta from BlockStore.metas(); None if it never ran."""
        r = meta.get("last_result")
        if not r:
            return None
        spec = meta["spec"]
        row = cls(
            block_id=str(spec["id"]),
            peer=str(spec["processor"]),
            cycle=int(r.get("cycle", meta.get("last_cycle", -1))),
            selected=int(r["selected"]),
            fitness=float(r["fitness"]),
            error_rate=int(r["errors"]) / max(1, int(r["selected"])),
            mean=float(r["mean"]),
            std=float(r["std"]),
            size=int(meta["num_entidades"]) / max(1, int(spec["max_entities"])),
        )
        return row if all(math.isfinite(getattr(row, f)) for f in FEATURES) else None

    def vector(self) -> list[float]:
        """The features in :data:`FEATURES` order."""
        return [getattr(self, f) for f in FEATURES]


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A flagged block: why, and the forest's anomaly score (in (0, 1], higher = odder)."""

    block_id: str
    cycle: int
    score: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return asdict(self)


def peer_counts(rows: Sequence[AuditRow]) -> dict[str, int]:
    """How many rows each peer set (processor) has."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.peer] = counts.get(row.peer, 0) + 1
    return counts


def find_anomalies(
    rows: Sequence[AuditRow],
    *,
    contamination: Contamination = "auto",
    min_blocks: int = MIN_BLOCKS,
    min_robust_z: float = MIN_ROBUST_Z,
    random_state: int = 0,
) -> list[Anomaly]:
    """Blocks the forest isolates that also sit far from their peers; most anomalous first.

    Pure (no Redis). Rows of peer sets smaller than ``min_blocks`` are ignored.
    """
    if contamination != "auto" and not 0.0 < float(contamination) <= 0.5:
        raise CorecError(f"contamination must be 'auto' or in (0, 0.5], got {contamination!r}")
    counts = peer_counts(rows)
    kept = [r for r in rows if counts[r.peer] >= min_blocks]
    if not kept:
        return []
    raw = np.array([r.vector() for r in kept], dtype=np.float64)
    # Evidence weight per row and feature: n / (n + k) for per-run features, 1 for size.
    n = np.array([max(0, r.selected) for r in kept], dtype=np.float64)[:, None]
    weight = np.repeat(n / (n + SHRINK_ENTITIES), len(FEATURES), axis=1)
    weight[:, FEATURES.index("size")] = 1.0
    z = np.empty_like(raw)
    medians = np.empty_like(raw)
    peers = np.array([r.peer for r in kept])
    for peer in np.unique(peers):
        at = peers == peer
        median = np.median(raw[at], axis=0)
        shrunk = (raw[at] - median) * weight[at]
        mad = np.median(np.abs(shrunk - np.median(shrunk, axis=0)), axis=0)
        z[at] = shrunk / np.maximum(_MAD_TO_SD * mad, SCALE_FLOOR)
        medians[at] = median
    # Imported here: scikit-learn takes a second to import, and `corec blocks redirect`
    # (this package, no audit) should not wait for it.
    from sklearn.ensemble import IsolationForest

    # A plain ndarray (no feature names), so sklearn has nothing to warn about.
    forest = IsolationForest(n_estimators=100, contamination=contamination,
                             random_state=random_state).fit(z)  # fmt: skip
    isolated = forest.predict(z) == -1
    scores = -forest.score_samples(z)
    out = []
    for i in np.flatnonzero(isolated):
        far = [j for j in np.argsort(-np.abs(z[i]), kind="stable") if abs(z[i, j]) >= min_robust_z]
        if not far:
            continue
        reason = ", ".join(
            f"{LABELS[FEATURES[j]]} {raw[i, j]:.3f} vs median {medians[i, j]:.3f}" for j in far[:3]
        )
        out.append(Anomaly(kept[i].block_id, kept[i].cycle, round(float(scores[i]), 4), reason))
    out.sort(key=lambda a: (-a.score, a.block_id))
    return out


#: Runs with input a block needs behind it before its own history is a baseline.
MIN_HISTORY = 2
#: Floors of the own-history scale (fitness, error rate), as SCALE_FLOOR's.
HISTORY_FLOOR = {"fit": 0.05, "err": 0.05}


def own_history_anomalies(
    metas: Sequence[dict[str, Any]], min_z: float = MIN_ROBUST_Z
) -> list[Anomaly]:
    """Blocks whose last run lies ``min_z`` deviations from their own history (pure).

    The history (``hist`` in the block's meta, kept by the engine) is an EWMA mean
    and variance of fitness and error rate over the runs *before* the last one;
    the deviation's scale is floored as in the peer audit. Idle runs are not judged.
    """
    out = []
    for meta in metas:
        h, r = meta.get("hist") or {}, meta.get("last_result") or {}
        if int(h.get("n", 0)) < MIN_HISTORY or not int(r.get("selected", 0)):
            continue
        now = {"fit": float(r["fitness"]), "err": int(r["errors"]) / int(r["selected"])}
        far = []
        for name, label in (("fit", "fitness"), ("err", "error rate")):
            sd = max(math.sqrt(max(0.0, float(h[name + "_var"]))), HISTORY_FLOOR[name])
            z = (now[name] - float(h[name])) / sd
            if abs(z) >= min_z:
                mean = float(h[name])
                far.append((abs(z), f"{label} {now[name]:.3f} vs its own mean {mean:.3f}"))
        if far:
            far.sort(reverse=True)
            score = round(min(1.0, far[0][0] / (4 * min_z)), 4)
            out.append(Anomaly(str(meta["spec"]["id"]), int(r.get("cycle", -1)), score,
                               ", ".join(f for _, f in far) + " (own history)"))  # fmt: skip
    return out


class AuditModule(Module):
    """``ModuloAuditoria``: find anomalous blocks, one ``corec_alerts`` warning each."""

    name = "audit"

    def __init__(
        self,
        store: BlockStore | None = None,
        bus: StreamBus | None = None,
        *,
        contamination: Contamination = "auto",
        min_blocks: int = MIN_BLOCKS,
        min_robust_z: float = MIN_ROBUST_Z,
        random_state: int = 0,
    ) -> None:
        self.store = store
        self.bus = bus
        self.contamination: Contamination = contamination
        self.min_blocks = min_blocks
        self.min_robust_z = min_robust_z
        self.random_state = random_state

    def initialize(self, nucleus: Any) -> None:
        """Use the nucleus's ``store`` (else one on its ``settings``) and a bus on its client."""
        super().initialize(nucleus)
        if self.store is None:
            self.store = getattr(nucleus, "store", None) or BlockStore(nucleus.settings)
        if self.bus is None:
            self.bus = getattr(nucleus, "bus", None) or StreamBus(self.store.settings, self.store.r)

    def run(self) -> dict[str, Any]:
        """Audit every block that has run; returns {checked, anomalies, alerts_published, ...}."""
        if self.store is None or self.bus is None:
            raise CorecError("AuditModule has no block store: pass one or call initialize()")
        metas = self.store.metas()
        rows = [r for m in metas if (r := AuditRow.from_meta(m)) is not None]
        counts = peer_counts(rows)
        small = {p: n for p, n in sorted(counts.items()) if n < self.min_blocks}
        checked = len(rows) - sum(small.values())
        report: dict[str, Any] = {"checked": checked, "anomalies": [], "alerts_published": 0}
        if small:
            report["skipped_peers"] = small
        # Blocks of small peer sets are compared with their own history instead.
        found = own_history_anomalies([m for m in metas if m["spec"]["processor"] in small],
                                      self.min_robust_z)  # fmt: skip
        report["checked_own_history"] = sum(small.values())
        if checked:
            found += find_anomalies(rows, contamination=self.contamination,
                                    min_blocks=self.min_blocks,
                                    min_robust_z=self.min_robust_z,
                                    random_state=self.random_state)  # fmt: skip
        elif not small:
            report["note"] = (f"nothing audited: needs at least {self.min_blocks} blocks that "
                              f"have run with the same processor, or {MIN_HISTORY} runs of "
                              f"a block")  # fmt: skip
        report["anomalies"] = [{"block_id": a.block_id, "reason": a.reason, "score": a.score}
                               for a in found]  # fmt: skip
        report["alerts_published"] = self._alert(found)
        return report

    def _alert(self, found: Sequence[Anomaly]) -> int:
        """Publish one alert per anomaly not yet alerted for that (block, cycle)."""
        assert self.store is not None and self.bus is not None
        if not found:
            return 0
        settings = self.store.settings
        pipe = self.store.r.pipeline(transaction=False)
        for a in found:
            key = settings.key(f"corec:audit:alerted:{a.block_id}:{a.cycle}")
            pipe.set(key, 1, nx=True, ex=ALERT_MARKER_TTL_S)
        fresh = [a for a, new in zip(found, pipe.execute(), strict=True) if new]
        # The marker is set before the publish: a crash in between loses one alert
        # rather than sending it twice on every rerun.
        for a in fresh:
            message = f"{a.block_id} looks anomalous: {a.reason}"
            log.warning("[audit] %s (score %.3f)", message, a.score)
            self.bus.publish(ALERTS, {"level": "warning", "source": "audit", "message": message,
                                      "block_id": a.block_id, "cycle": a.cycle,
                                      "score": a.score})  # fmt: skip
        return len(fresh)
