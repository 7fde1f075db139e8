"""Backfill: historical reports into the store, the retrieval index's source and the drift baseline, in batches.

``Backfill(source, BackfillSink(store, routing), Checkpoints(dir)).run(files)`` → ``Summary``. The source (files split
into messages and normalised) is gateway/backfill's, handed in by the CLI. Nothing is drafted, posted or published.
"""

from ops.backfill.checkpoint import Checkpoint, Checkpoints
from ops.backfill.run import Backfill, Source, Unit
from ops.backfill.sink import BackfillSink, Written
from ops.backfill.summary import Summary

__all__ = ["Backfill", "BackfillSink", "Checkpoint", "Checkpoints", "Source", "Summary", "Unit", "Written"]
