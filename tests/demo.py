"""``make demo``: serve the demo files on 127.0.0.1, run the given command against them, stop the server.

python -m tests.demo --port 8717 -- bulkdl run manifests/demo.yaml
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from .httpserver import FaultServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=8717)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run while the server is up")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    try:
        server = FaultServer(args.port)
    except OSError as exc:
        hint = "the demo manifest uses this port: stop whatever holds it (another demo?)"
        print(f"demo: cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); {hint}", file=sys.stderr)
        return 2
    print(f"demo: serving generated files on {server.base_url}; running: {' '.join(command)}", flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 130
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(main())
