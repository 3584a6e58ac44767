"""Run one signaling pod under cProfile with a CPU clock (time spent descheduled on a
busy machine is not counted), and write the profile when it stops.

    python -m bench.profile_pod OUT.prof serve --host ... (the flags of ``signaling``)

``python -m bench.workload_bench --profile`` uses it for the cross-pod pods.
"""

from __future__ import annotations

import cProfile
import sys
import time

from signaling.__main__ import main as signaling_main


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        return signaling_main(argv)
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    sys.exit(main())
