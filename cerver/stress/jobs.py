"""Long stress tests run inside one named, detached job actor (``num_cpus=0``), so any
Serve replica can start one and any replica can answer the poll.

    jobs_actor(namespace) -> handle      get-or-create
    handle.start.remote(plan, result, settings, credentials, account_id) -> StressResult
    handle.get.remote(job_id) -> StressResult | None
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from cerver.config import Settings
from cerver.errors import CerverError
from cerver.store.ids import now
from cerver.stress.models import StressResult
from cerver.stress.runner import StressPlan, execute, recorder_for

JOBS_ACTOR_NAME = "cerver-stress-jobs"
MAX_JOBS = 500  # finished jobs beyond this are forgotten, oldest first


@ray.remote(num_cpus=0)
class StressJobs:
    def __init__(self) -> None:
        self._jobs: dict[str, StressResult] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(
        self,
        plan: StressPlan,
        result: StressResult,
        settings: Settings | None = None,
        credentials: dict[str, dict[str, str]] | None = None,
        account_id: str | None = None,
    ) -> StressResult:
        self._jobs[result.id] = result
        self._evict()
        self._tasks[result.id] = asyncio.get_running_loop().create_task(
            self._run(plan, result, settings, credentials, account_id)
        )
        return result

    async def get(self, job_id: str) -> StressResult | None:
        return self._jobs.get(job_id)

    async def ping(self) -> bool:
        return True

    def _progress(self, job_id: str) -> Any:
        def update(fraction: float) -> None:
            job = self._jobs.get(job_id)
            if job is not None and job.status == "running":
                job.progress = round(min(fraction, 0.99), 4)

        return update

    async def _run(
        self,
        plan: StressPlan,
        result: StressResult,
        settings: Settings | None,
        credentials: dict[str, dict[str, str]] | None,
        account_id: str | None,
    ) -> None:
        try:
            self._jobs[result.id] = await execute(
                plan,
                result,
                self._progress(result.id),
                settings=settings,
                credentials=credentials,
                account_id=account_id,
                record=recorder_for(settings) if settings is not None else None,
            )
        except CerverError as exc:
            self._fail(result.id, exc.to_body()["error"])
        except Exception as exc:  # the job fails visibly; the actor keeps serving polls
            self._fail(result.id, {"code": "internal", "message": f"{type(exc).__name__}: {exc}"})
        finally:
            self._tasks.pop(result.id, None)

    def _fail(self, job_id: str, error: dict[str, Any]) -> None:
        job = self._jobs[job_id]
        self._jobs[job_id] = job.model_copy(
            update={"status": "failed", "error": error, "finished_at": now()}
        )

    def _evict(self) -> None:
        finished = [j for j in self._jobs.values() if j.status != "running"]
        excess = len(self._jobs) - MAX_JOBS
        for job in sorted(finished, key=lambda j: j.created_at)[: max(excess, 0)]:
            del self._jobs[job.id]


def jobs_actor(namespace: str) -> Any:
    """The job actor of this namespace, created on first use (get-or-create)."""
    return StressJobs.options(  # type: ignore[attr-defined]
        name=JOBS_ACTOR_NAME,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote()
