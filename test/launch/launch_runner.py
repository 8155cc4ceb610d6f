"""Run one launch file with the real launch library, as `ros2 launch` does, until SIGINT.

    python launch_runner.py FILE [name:=value ...] --events EVENTS.jsonl

Each process start and exit is appended to EVENTS as one JSON line; the last line is
{"event": "end", "returncode": N}. Used by test_launch_files.py (launch_ros has no CLI here)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time


def main() -> int:
    # As `ros2 launch` typed in a terminal: SIGINT stops the launch. A process started in the
    # background by a non-interactive shell (CI scripts, `cmd &`) inherits SIGINT ignored,
    # and an ignored SIGINT stays ignored here too: the launch would never stop on Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit, OnProcessStart
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchDescription, LaunchService

    ap = argparse.ArgumentParser()
    ap.add_argument("launch_file")
    ap.add_argument("arguments", nargs="*", help="name:=value")
    ap.add_argument("--events", required=True)
    a = ap.parse_args()
    with open(a.events, "a", buffering=1) as out:

        def record(kind: str):
            def handler(event, _context):
                out.write(json.dumps({"event": kind, "name": event.action.name,
                                      "pid": event.pid,
                                      "returncode": getattr(event, "returncode", None),
                                      "t": time.monotonic()}) + "\n")
            return handler

        args = [tuple(x.split(":=", 1)) for x in a.arguments]
        ls = LaunchService()
        ls.include_launch_description(LaunchDescription([
            RegisterEventHandler(OnProcessStart(on_start=record("start"))),
            RegisterEventHandler(OnProcessExit(on_exit=record("exit"))),
            IncludeLaunchDescription(PythonLaunchDescriptionSource(a.launch_file),
                                     launch_arguments=args),
        ]))
        rc = ls.run()
        out.write(json.dumps({"event": "end", "returncode": rc}) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
