"""What the HTTP layer calls: submit a stress test (answered at once when small, else as a
job in the job actor), poll a job, and refuse a canary on a provider this account cannot
execute on, saying why."""

from __future__ import annotations

from collections.abc import Sequence

from cerver.adapters.access import why_not_executable
from cerver.adapters.catalog import ProviderProfile
from cerver.config import Settings
from cerver.errors import ComputeUnavailable, NotFound
from cerver.stress.jobs import jobs_actor
from cerver.stress.models import StressRequest, StressResult
from cerver.stress.runner import StressPlan, execute, plan_stress, recorder_for, skeleton


def ensure_executable(plan: StressPlan, executable: set[str], settings: Settings) -> None:
    missing = [p.name for p in plan.profiles if p.name not in executable]
    if missing:
        reasons = {name: why_not_executable(name, settings) for name in missing}
        raise ComputeUnavailable(
            "canary needs providers this account can execute on: "
            + "; ".join(f"{n}: {r}" for n, r in reasons.items()),
            details={"not_executable": reasons, "executable": sorted(executable)},
        )


async def submit(
    request: StressRequest,
    profiles: Sequence[ProviderProfile],
    *,
    settings: Settings,
    credentials: dict[str, dict[str, str]] | None = None,
    account_id: str | None = None,
    executable: set[str] | None = None,
) -> StressResult:
    plan = plan_stress(request, profiles)
    if request.mode == "canary":
        ensure_executable(plan, executable or set(), settings)
    result = skeleton(plan)
    if plan.is_async:
        from ray.exceptions import RayTaskError

        from cerver.actors.calls import unwrap

        actor = jobs_actor(settings.ray_namespace)
        try:
            started: StressResult = await actor.start.remote(
                plan, result, settings, credentials, account_id
            )
        except RayTaskError as exc:  # our own refusal (too many jobs) comes back unwrapped
            raise unwrap(exc) from None
        return started
    return await execute(
        plan,
        result,
        lambda _fraction: None,
        settings=settings,
        credentials=credentials,
        account_id=account_id,
        record=recorder_for(settings) if request.mode == "canary" else None,
    )


async def poll(job_id: str, settings: Settings, account_id: str | None = None) -> StressResult:
    """A job by id; a canary job only for the account that started it (else not found)."""
    actor = jobs_actor(settings.ray_namespace)
    found: StressResult | None = await actor.get.remote(job_id, account_id)
    if found is None:
        raise NotFound(f"no stress test {job_id!r} (finished jobs are kept for a while only)")
    return found
