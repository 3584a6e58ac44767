"""``python -m bench`` (``make bench``): the workload benchmark, the edge's, then the
operator's.

The operator benchmark (``bench/operator_bench.py``) runs only when it is present.
``BENCH_ONLY=workload``, ``BENCH_ONLY=edge`` or ``BENCH_ONLY=operator`` runs just one.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback


def main() -> int:
    only = os.environ.get("BENCH_ONLY", "")
    status = 0
    if only in ("", "workload"):
        from bench import workload_bench

        try:
            status |= workload_bench.main([])
        except Exception:
            # The operator benchmark still runs; the exit status says this one failed.
            traceback.print_exc()
            print("[bench] workload benchmark FAILED", flush=True)
            status |= 1
    if only in ("", "edge"):
        from bench import edge_bench

        try:
            status |= edge_bench.main([])
        except Exception:
            traceback.print_exc()
            print("[bench] edge benchmark FAILED", flush=True)
            status |= 1
    if only in ("", "operator"):
        if importlib.util.find_spec("bench.operator_bench") is None:
            print("[bench] bench/operator_bench.py not present; skipped", flush=True)
        else:
            from bench import operator_bench

            status |= int(operator_bench.main() or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
