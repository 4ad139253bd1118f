"""What a user would write instead of Cerver's ``POST /v2/sessions/:id/run``: one FastAPI
endpoint on uvicorn that runs the code under bwrap, a fresh bwrap per request, with the
very flags Cerver's local sandboxes get (built by cerver/adapters/local/isolation.py, so
the two cannot drift apart). It does no more than that: no auth, no sessions, no
transcript, no per-sandbox uid, rlimits or mount hiding (Cerver does all of these).

    python bench/_handwritten_run.py --port 8900 --workspace /tmp/ws

``POST /run {"code": "true"}`` answers ``{stdout, stderr, exit_code, duration_ms}``;
``GET /noop`` answers ``{}`` (the HTTP floor of this stack).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

from cerver.adapters.local.isolation import (
    BWRAP_HOST_CWD,
    BWRAP_HOST_ENV,
    bwrap_prefix_argv,
    limits_from,
    sandbox_env,
)
from cerver.adapters.local.layout import WORKSPACE_IN_BWRAP, LocalSandboxData
from cerver.config import Settings


def bwrap_flags(workspace: str) -> list[str]:
    """bwrap and its flags as Cerver builds them for a sandbox without network."""
    data = LocalSandboxData(
        workspace=workspace,
        uid=os.getuid(),
        gid=os.getgid(),
        dedicated_uid=False,
        isolation="bwrap",
        limits=limits_from(Settings(home=Path(workspace), database_url="sqlite://")),
    )
    env = sandbox_env(data, {})
    return bwrap_prefix_argv(data, network=False, cwd_inside=WORKSPACE_IN_BWRAP, env=env)


class RunBody(BaseModel):
    code: str
    timeout: float = 30.0


def make_app(workspace: str) -> FastAPI:
    prefix = bwrap_flags(workspace)
    app = FastAPI()

    @app.post("/run")
    async def run(body: RunBody) -> dict[str, object]:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *prefix, "/bin/bash", "-c", body.code,
            env=BWRAP_HOST_ENV, cwd=BWRAP_HOST_CWD, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), body.timeout)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
        return {
            "stdout": out.decode(errors="replace"),
            "stderr": err.decode(errors="replace"),
            "exit_code": proc.returncode,
            "duration_ms": (time.perf_counter() - started) * 1000.0,
        }

    @app.get("/noop")
    async def noop() -> dict[str, object]:
        return {}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workspace", required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(args.workspace), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
