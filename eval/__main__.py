"""``python -m eval --dataset DIR --split test --pipeline NAME [--run-file OUT]``, plus the
``report``, ``score``, ``regress`` and ``convert`` subcommands (see :mod:`eval.cli`).

The plain form runs every judged query of the split through the pipeline (building or
reusing the indexes it needs), writes a TREC run file and prints nDCG@10, RR@10, R@100,
R@1000 and MAP. Several ``--pipeline`` flags evaluate several pipelines.
"""

from __future__ import annotations

import sys

from eval.cli import main

if __name__ == "__main__":
    sys.exit(main())
