"""Hot index swap: reload on demand, or when a published ``current`` symlink changes.

The watcher polls the symlink targets (cheap ``readlink`` calls) every ``poll_s`` seconds and
reloads in a worker thread when one moves. A version that was refused is not retried until
the published target moves again, so a corrupt index does not cause a reload loop.
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
            targets = self.engine.published_targets()
            report = self.engine.reload()
            self.last_targets, self.last_report = targets, report
        self.metrics.reloads.labels("swapped").inc(len(report.swapped))
        self.metrics.reloads.labels("refused").inc(len(report.refused))
        if not report.swapped and not report.refused:
            self.metrics.reloads.labels("unchanged").inc()
        self.metrics.set_index_versions(self.engine.served_versions())
        return report

    def changed(self) -> bool:
        return self.engine.published_targets() != self.last_targets

    async def watch(self, poll_s: float) -> None:
        """Poll forever (cancel the task to stop); errors are logged, never raised."""
        while True:
            await asyncio.sleep(poll_s)
            try:
                if await self.workers.run(self.changed):
                    logger.info("published index versions changed: reloading")
                    await self.workers.run(self.reload)
            except Exception:  # noqa: BLE001 - a watcher must survive anything
                logger.exception("index watcher failed; retrying in %.1fs", poll_s)
