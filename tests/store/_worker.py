"""A second process for the concurrency tests: ``python -m tests.store._worker <command> ...``.

It prints ``ready`` once imported and connected, waits for a line on stdin (so that all
workers start together), does its work and prints one JSON line with the result.

    append <url> <session_id> <tag> <threads> <count>   appends threads*count entries
    migrate <url> <threads>                             migrates with fresh engines
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cerver.store.db import engine_for, new_engine
from cerver.store.migrations import migrate
from cerver.store.sessions import Sessions


def _in_threads(threads: int, work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as exc:  # reported to the parent test
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return results


def append(url: str, session_id: str, tag: str, threads: int, count: int) -> list[int]:
    sessions = Sessions(engine_for(url))
    _ready()

    def work(i: int) -> list[int]:
        return [
            sessions.append(session_id, "run", {"tag": tag, "t": i, "n": k}) for k in range(count)
        ]

    return [seq for batch in _in_threads(threads, work) for seq in batch]


def migrate_many(url: str, threads: int) -> list[int]:
    engines = [new_engine(url) for _ in range(threads)]
    _ready()
    try:
        return _in_threads(threads, lambda i: migrate(engines[i]))
    finally:
        for e in engines:
            e.dispose()


def spawn(commands: list[list[Any]], timeout: float = 90) -> list[Any]:
    """(In the test) run one worker per command, start them together, return their results."""
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.store._worker", *map(str, command)],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"worker did not start: {line}{p.communicate()[1]}")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(f"worker failed ({p.returncode}):\n{err}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _ready() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def main(argv: list[str]) -> None:
    command, url, *rest = argv
    if command == "append":
        session_id, tag, threads, count = rest
        result: Any = append(url, session_id, tag, int(threads), int(count))
    elif command == "migrate":
        result = migrate_many(url, int(rest[0]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
