"""Hot index swap: reload on demand, when a published ``current`` symlink changes, or when a served
version is damaged on disk (then the engine falls back to the last good version by itself).

The watcher polls every ``poll_s`` seconds: cheap ``readlink`` and ``stat`` calls, and a lease
refresh so that the indexer's retention keeps the versions served here. A version that was
refused is not retried until the published target moves again (the engine's guard remembers it),
so a corrupt index or a broken manifest does not cause a reload loop; a reload that fails
outright is counted (``outcome="error"``) and answered, never raised to the client.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from service.engine import Engine, ReloadReport
from service.metrics import Metrics
from service.threads import Workers

logger = logging.getLogger(__name__)


class Reloader:
    """Runs :meth:`Engine.reload` (one at a time) and records the outcome in the metrics."""

    def __init__(self, engine: Engine, metrics: Metrics, workers: Workers):
        self.engine, self.metrics, self.workers = engine, metrics, workers
        self._lock = threading.Lock()
        self.last_targets = engine.published_targets()
        self.last_report: ReloadReport | None = None
        metrics.set_index_versions(engine.served_versions())

    def reload(self) -> ReloadReport:
        with self._lock:
            self.last_targets = self.engine.published_targets()  # before: a failure is not retried in a loop
            try:
                report = self.engine.reload()
            except Exception as exc:  # noqa: BLE001 - the old state keeps serving; the failure is counted
                logger.exception("index reload failed; the served versions are unchanged")
                self.metrics.reloads.labels("error").inc()
                report = ReloadReport(refused={"*": f"reload failed: {type(exc).__name__}"})
                self.last_report = report
                return report
            self.last_report = report
        self.metrics.reloads.labels("swapped").inc(len(report.swapped))
        self.metrics.reloads.labels("refused").inc(len(report.refused))
        self.metrics.reloads.labels("fallback").inc(len(report.fallback))
        if not report.swapped and not report.refused and not report.fallback:
            self.metrics.reloads.labels("unchanged").inc()
        self.metrics.set_index_versions(self.engine.served_versions())
        self.engine.refresh_leases()
        return report

    def changed(self) -> bool:
        return self.engine.published_targets() != self.last_targets

    def check(self, follow_published: bool) -> bool:
        """Refresh leases; True when a reload is due (a served version damaged, or ``current`` moved)."""
        self.engine.refresh_leases()
        damaged = self.engine.damaged()
        if damaged:
            logger.error("served index versions damaged, falling back: %s", sorted(damaged))
            return True
        return follow_published and self.changed()

    async def watch(self, poll_s: float, follow_published: bool = True) -> None:
        """Poll forever (cancel the task to stop); errors are logged, never raised."""
        while True:
            await asyncio.sleep(poll_s)
            try:
                if await self.workers.run(self.check, follow_published):
                    logger.info("published index versions changed or a served one is damaged: reloading")
                    await self.workers.run(self.reload)
            except Exception:  # noqa: BLE001 - a watcher must survive anything
                logger.exception("index watcher failed; retrying in %.1fs", poll_s)
