"""Run the side-by-side benchmark: ``python benchmarks/run.py [--quick] [--output PATH] [--workloads ...]``.

A thin entry point over ``stateline.bench`` (the same code as ``stateline bench``).
"""

from __future__ import annotations

import argparse

from stateline.bench import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="everything tiny, in under a minute")
    parser.add_argument(
        "--output", default="benchmarks/results/latest.json", help="JSON result file (the chart goes next to it)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--workloads", default="micro,agent,concurrent", help="comma-separated, of micro, agent, concurrent, long"
    )
    parser.add_argument("--long-turns", type=int, help="long threads: chat turns on one thread (1,000)")
    parser.add_argument("--long-checkpoints", type=int, help="long threads: checkpoints of the built thread (10,000)")
    args = parser.parse_args()
    main(
        quick=args.quick,
        output=args.output,
        progress=not args.no_progress,
        workloads=tuple(w for w in args.workloads.split(",") if w),
        long_turns=args.long_turns,
        long_checkpoints=args.long_checkpoints,
    )
