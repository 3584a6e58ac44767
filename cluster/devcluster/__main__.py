"""``python -m devcluster up|down|status|build|kubectl ...|agent``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import control_plane


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__)
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="state folder (default: .cluster/ in the repository)",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="build what is missing, start the cluster, wait until ready")
    sub.add_parser("down", help="stop everything that `up` started")
    sub.add_parser("status", help="processes, their memory, the service proxy's table")
    sub.add_parser("build", help="build (or find) the binaries; print their folder")
    k = sub.add_parser("kubectl", help="run the pinned kubectl against the local cluster")
    k.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("agent", help="(internal) run the node agent and service proxy")
    ns = parser.parse_args(argv)
    state = ns.state or Path(os.environ.get("ROOMWIRE_CLUSTER_DIR", control_plane.DEFAULT_STATE))
    state = state.resolve()
    try:
        if ns.cmd == "up":
            control_plane.up(state)
        elif ns.cmd == "down":
            control_plane.down(state)
        elif ns.cmd == "status":
            if not control_plane.is_up(state):
                print("not running")
                return 1
            print(json.dumps(control_plane.status(state), indent=1))
        elif ns.cmd == "build":
            bins = control_plane.binaries()
            print(bins["kube-apiserver"].parent)
        elif ns.cmd == "kubectl":
            kubectl = control_plane.binaries(build=False)["kubectl"]
            os.execv(str(kubectl), [str(kubectl), f"--kubeconfig={state / 'kubeconfig'}", *ns.args])
        elif ns.cmd == "agent":
            from .agent_main import run

            return run(state, control_plane.REPO_ROOT)
    except control_plane.ClusterError as e:
        print(f"devcluster: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
