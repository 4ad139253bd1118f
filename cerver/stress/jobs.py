"""Long stress tests run inside one named, detached job actor (``num_cpus=0``), so any
Serve replica can start one and any replica can answer the poll.

    jobs_actor(namespace) -> handle      get-or-create
    handle.start.remote(plan, result, settings, credentials, account_id) -> StressResult
    handle.get.remote(job_id, account_id) -> StressResult | None

Bounded: at most ``settings.stress_jobs_max`` jobs are kept; finished ones are forgotten
``settings.stress_job_ttl_s`` after they finish (or sooner, oldest first, to make room), and
when every kept job is still running a new one is refused (429). A canary job belongs to the
account that started it: to anyone else (or no token) it does not exist. Simulated jobs use
public catalog data only and are readable by anyone with the id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from cerver.config import Settings
from cerver.errors import CerverError, RateLimited
from cerver.store.ids import now
from cerver.stress.models import StressResult
from cerver.stress.runner import StressPlan, execute, recorder_for

log = logging.getLogger("cerver.stress")

JOBS_ACTOR_NAME = "cerver-stress-jobs"
MAX_JOBS = 500  # without settings: finished jobs beyond this are forgotten, oldest first
JOB_TTL_S = 3600.0


@ray.remote(num_cpus=0)
class StressJobs:
    def __init__(self) -> None:
        self._jobs: dict[str, StressResult] = {}
        self._owners: dict[str, str] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(
        self,
        plan: StressPlan,
        result: StressResult,
        settings: Settings | None = None,
        credentials: dict[str, dict[str, str]] | None = None,
        account_id: str | None = None,
    ) -> StressResult:
        self._make_room(settings)
        self._jobs[result.id] = result
        if account_id is not None:
            self._owners[result.id] = account_id
        self._tasks[result.id] = asyncio.get_running_loop().create_task(
            self._run(plan, result, settings, credentials, account_id)
        )
        return result

    async def get(self, job_id: str, account_id: str | None = None) -> StressResult | None:
        self._expire(JOB_TTL_S if self._ttl is None else self._ttl)
        owner = self._owners.get(job_id)
        if owner is not None and owner != account_id:
            return None  # someone else's canary: not found, as if it did not exist
        return self._jobs.get(job_id)

    async def count(self) -> int:
        return len(self._jobs)

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
        except Exception:  # the job fails visibly; the actor keeps serving polls
            log.exception("stress job %s failed", result.id)
            self._fail(
                result.id,
                {"code": "internal", "message": "internal error; the server log has the details"},
            )
        finally:
            self._tasks.pop(result.id, None)

    def _fail(self, job_id: str, error: dict[str, Any]) -> None:
        job = self._jobs[job_id]
        self._jobs[job_id] = job.model_copy(
            update={"status": "failed", "error": error, "finished_at": now()}
        )

    _ttl: float | None = None

    def _forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._owners.pop(job_id, None)

    def _expire(self, ttl_s: float) -> None:
        cutoff = now() - ttl_s
        for job in list(self._jobs.values()):
            if job.finished_at is not None and job.finished_at < cutoff:
                self._forget(job.id)

    def _make_room(self, settings: Settings | None) -> None:
        """Forget expired jobs, then the oldest finished ones until one more fits; refuse
        when every kept job is still running."""
        limit = settings.stress_jobs_max if settings is not None else MAX_JOBS
        self._ttl = settings.stress_job_ttl_s if settings is not None else JOB_TTL_S
        self._expire(self._ttl)
        finished = sorted(
            (j for j in self._jobs.values() if j.status != "running"), key=lambda j: j.created_at
        )
        while len(self._jobs) >= limit and finished:
            self._forget(finished.pop(0).id)
        if len(self._jobs) >= limit:
            raise RateLimited(
                f"{limit} stress tests are running on this server; retry when one finishes "
                "(or run a smaller one without async)",
                retry_after_s=10.0,
                details={
                    "limit": "stress_jobs_max",
                    "value": limit,
                    "setting": "CERVER_STRESS_JOBS_MAX",
                },
            )


def jobs_actor(namespace: str) -> Any:
    """The job actor of this namespace, created on first use (get-or-create)."""
    return StressJobs.options(  # type: ignore[attr-defined]
        name=JOBS_ACTOR_NAME,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote()
