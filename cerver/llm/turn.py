"""One model turn in a session, from request to transcript:

1. plan: the model (named, the session harness's default, or ``auto``), its fallbacks and,
   for a cascade, the ladder; everything is validated before anything is written;
2. the conversation: the session's earlier turns (cerver/llm/conversation.py) plus the
   new input; the ``user`` entry is appended;
3. steps: call upstream (retries and fallbacks in cerver/llm/attempts.py, a budget
   reservation around each call); each tool call the model makes runs in the session's
   compute (``tool_call`` / ``tool_result`` entries) and the model is called again, until
   it answers or ``max_steps`` is reached;
4. cascade: an answer that fails the check escalates one rung up the ladder; the rejected
   answer stays in the transcript, marked ``superseded``, and in the cost;
5. the ``assistant`` entry: text, model, harness, usage and cost summed over every call,
   latency, finish reason, attempts, routing; its seq is the answer's.

The turn is an async generator of events (``delta``, ``tool_call``, ``tool_result``,
``done``), which the route streams as SSE or collapses into one JSON answer. If the
consumer goes away mid-turn, the generator is closed: what was produced is appended as the
assistant entry (``aborted``) and the call in flight is settled at an estimated cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field

from cerver.llm.aio import shielded
from cerver.llm.attempts import Answered, Attempt, InFlight, call_with_fallbacks
from cerver.llm.catalog import ModelEntry
from cerver.llm.conversation import estimate_tokens, history
from cerver.llm.harnesses.base import Endpoint
from cerver.llm.routing import Decision, escalation_reason
from cerver.llm.service import LlmService
from cerver.llm.tools import RUN_TOOL, ToolOutcome
from cerver.llm.types import Call, Completion, Message, TextDelta, Usage
from cerver.llm.wire import RunLlmRequest, RunLlmResponse, TokenUsage
from cerver.store import SessionRow, TranscriptEntry
from cerver.store.ids import new_id
from cerver.store.llm_spend import SpendRow, Write

ToolRunner = Callable[[dict[str, Any]], Awaitable[ToolOutcome]]
ABORTED = "the turn ended before the model finished (the client went away or the upstream failed)"


class Event(BaseModel):
    kind: str  # delta | tool_call | tool_result | done
    data: dict[str, Any]


class Plan(BaseModel):
    models: list[ModelEntry]  # the first, then the fallbacks
    ladder: list[ModelEntry] = Field(default_factory=list)  # cascade rungs above the first
    routing: Decision | None = None
    max_output_tokens: int


class Tally(BaseModel):
    """What the turn's calls used and cost, summed."""

    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    estimated: bool = False
    calls: int = 0


class Turn:
    def __init__(
        self,
        service: LlmService,
        row: SessionRow,
        body: RunLlmRequest,
        plan: Plan,
        run_tool: ToolRunner | None,
        entries: list[TranscriptEntry],
        own: Mapping[str, Endpoint] | None = None,
    ) -> None:
        self.own = own  # the account's own model endpoints (keys), by harness
        self.entries = entries
        self.service = service
        self.row = row
        self.body = body
        self.plan = plan
        self.run_tool = run_tool
        self.received = time.perf_counter()
        self.turn_id = new_id("turn")
        self.tally = Tally()
        self.attempts: list[Attempt] = []
        self.steps: list[dict[str, Any]] = []
        self.inflight = InFlight()
        self.text_so_far: list[str] = []
        self.model_used: ModelEntry = plan.models[0]
        self.dropped_turns = 0
        self.finished = False
        self._last = Completion()
        self._tool_error_left = False
        self._prepaid: str | None = None
        self._unsettled: list[tuple[str, SpendRow]] = []  # calls whose spend is not written

    # --- the turn ------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[Event]:
        first = self.plan.models[0]
        room = first.context_window - self.plan.max_output_tokens - self._own_tokens()
        past, self.dropped_turns = history(self.entries, budget_tokens=max(0, room))
        messages = [*past, Message(role="user", text=self.body.input)]
        # The first reservation and the user entry commit together: a turn over budget
        # leaves nothing behind (402 before any upstream call).
        user = {"text": self.body.input, "model": self.body.model}
        self._prepaid = await self.service.budget.reserve(
            self.row.account_id,
            self.row.id,
            first,
            self._call(first, messages),
            then=self._writer("user", user),
        )
        try:
            rungs = [self.plan.models, *[[e] for e in self.plan.ladder]]
            for index, models in enumerate(rungs):
                last_rung = index == len(rungs) - 1
                # A rung a cascade may still reject is not streamed: its text would reach
                # the client before the check.
                stream = self.body.stream and last_rung
                async for event in self._steps(models, list(messages), stream=stream):
                    yield event
                done = self._last
                why = escalation_reason(done.text, done.finish_reason, self._tool_error_left)
                if why is None or last_rung:
                    break
                await self._append_assistant(done, superseded=why)
                if self.plan.routing is not None:
                    self.plan.routing.reason += (
                        f"; cascade: {self.model_used.name} answer rejected ({why}), "
                        f"escalated to {rungs[index + 1][0].name}"
                    )
                self.text_so_far = []
            seq = await self._append_assistant(done)
            self.finished = True
            yield Event(kind="done", data=self._response(done, seq).model_dump(exclude_none=True))
        finally:
            if not self.finished:
                await shielded(self._record_abort())
            while self._unsettled:  # a write that would have carried them failed
                await shielded(self._settle_next())
            if self._prepaid is not None:
                await shielded(self.service.budget.release(self._prepaid))

    # --- steps of one rung ---------------------------------------------------------------
    async def _steps(
        self, models: list[ModelEntry], messages: list[Message], *, stream: bool
    ) -> AsyncIterator[Event]:
        self._tool_error_left = False
        for _step in range(self.body.max_steps):
            answered: Answered | None = None
            async for item in call_with_fallbacks(
                models,
                lambda entry: self._call(entry, messages),
                harness_for=lambda entry: self.service.harness_for(entry, self.own),
                reserve=self._reserve,
                release=self.service.budget.release,
                stream=stream,
                retries=self.service.settings.llm_retries,
                max_wait_s=self.service.settings.llm_retry_max_wait_s,
                attempts=self.attempts,
                inflight=self.inflight,
            ):
                if isinstance(item, TextDelta):
                    self.model_used = self.inflight.entry or self.model_used
                    self.text_so_far.append(item.text)
                    yield Event(kind="delta", data={"text": item.text})
                else:
                    answered, reservation = item
                    self._settle(reservation, answered.entry, answered.completion, messages)
            assert answered is not None
            completion = answered.completion
            self.model_used = answered.entry
            models = [answered.entry]  # later steps stay on the model that answered
            self._last = completion
            if not completion.tool_calls or self.run_tool is None:
                return
            messages.append(
                Message(role="assistant", text=completion.text, tool_calls=completion.tool_calls)
            )
            for tool_call in completion.tool_calls:
                call_data = {
                    "id": tool_call.id,
                    "name": tool_call.name,
                    "arguments": tool_call.arguments,
                    "model": answered.entry.name,
                }
                call_seq = await self._append("tool_call", call_data)
                yield Event(kind="tool_call", data={**call_data, "seq": call_seq})
                outcome = await self._run(tool_call.name, tool_call.arguments)
                result = {"id": tool_call.id, "name": tool_call.name, **outcome.model_dump()}
                result_seq = await self._append("tool_result", result)
                self.steps.append(
                    {"tool_call": call_data, "tool_result": result, "seq": result_seq}
                )
                yield Event(kind="tool_result", data={**result, "seq": result_seq})
                messages.append(
                    Message(
                        role="tool",
                        tool_call_id=tool_call.id,
                        text=outcome.output,
                        is_error=outcome.is_error,
                    )
                )
                self._tool_error_left = outcome.is_error
            self.text_so_far = []
        self._last = self._last.model_copy(update={"finish_reason": "max_steps"})

    async def _run(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        if name != RUN_TOOL.name or self.run_tool is None:
            return ToolOutcome(
                output=f"unknown tool {name!r}; the only tool is 'run'", is_error=True
            )
        return await self.run_tool(arguments)

    # --- money ---------------------------------------------------------------------------
    async def _reserve(self, entry: ModelEntry, call: Call) -> str:
        """The first call uses the reservation made before the turn was written down."""
        if self._prepaid is not None and entry.name == self.plan.models[0].name:
            prepaid, self._prepaid = self._prepaid, None
            return prepaid
        return await self.service.budget.reserve(self.row.account_id, self.row.id, entry, call)

    def _settle(
        self, reservation: str, entry: ModelEntry, completion: Completion, messages: list[Message]
    ) -> None:
        usage, estimated = completion.usage, False
        if usage is None:
            usage, estimated = (
                self._estimate(messages, "".join(self.text_so_far) or completion.text),
                True,
            )
        self._settle_usage(reservation, entry, usage, estimated)

    def _settle_usage(
        self, reservation: str, entry: ModelEntry, usage: Usage, estimated: bool
    ) -> None:
        """Count the call in the turn's tally; its settlement is written with the turn's
        next transcript entry, in the same transaction (one commit instead of two). Until
        then its reservation, the call's worst case, stays held: never less than it cost."""
        cost = self.service.prices.cost(entry, usage)
        premium = self.service.premium()
        baseline = self.service.prices.cost(premium, usage) if premium is not None else cost
        self._unsettled.append(
            (
                reservation,
                SpendRow(
                    turn_id=self.turn_id,
                    model=entry.name,
                    harness=entry.harness,
                    **usage.model_dump(),
                    cost_usd=cost,
                    baseline_usd=baseline,
                    estimated=estimated,
                ),
            )
        )
        self.tally.usage = self.tally.usage + usage
        self.tally.cost_usd += cost
        self.tally.estimated = self.tally.estimated or estimated
        self.tally.calls += 1

    def _estimate(self, messages: list[Message], output: str) -> Usage:
        text_in = (self.body.system or "") + "".join(m.text for m in messages)
        return Usage(input_tokens=estimate_tokens(text_in), output_tokens=estimate_tokens(output))

    async def _record_abort(self) -> None:
        """The consumer went away (or the turn failed) mid-turn: keep what was produced."""
        entry, call, reservation = (
            self.inflight.entry,
            self.inflight.call,
            self.inflight.reservation,
        )
        if entry is not None and call is not None and reservation is not None:
            usage = self._estimate(call.messages, "".join(self.text_so_far))
            self._settle_usage(reservation, entry, usage, True)
        if self.text_so_far or self.tally.calls:
            await self._append(
                "assistant",
                {
                    "text": "".join(self.text_so_far),
                    "model": self.model_used.name,
                    "harness": self.model_used.harness,
                    "aborted": ABORTED,
                    "usage": self.tally.usage.model_dump(),
                    "cost_usd": round(self.tally.cost_usd, 10),
                    "cost_estimated": True,
                    "attempts": [a.model_dump() for a in self.attempts],
                },
            )

    # --- transcript ----------------------------------------------------------------------
    def _writer(self, type_: str, content: dict[str, Any]) -> Write:
        """The transcript entry, to be written inside another write's transaction."""
        sessions, session_id = self.service.store.sessions, self.row.id
        return lambda conn: sessions.append_in(conn, session_id, type_, content)

    async def _append(self, type_: str, content: dict[str, Any]) -> int:
        """Append an entry; a call still to settle is settled in the same transaction."""
        while len(self._unsettled) > 1:
            await self._settle_next()
        if not self._unsettled:
            return await asyncio.to_thread(
                self.service.store.sessions.append, self.row.id, type_, content
            )
        return int(await self._settle_next(then=self._writer(type_, content)))

    async def _settle_next(self, then: Write | None = None) -> Any:
        """Write the oldest pending settlement (and ``then``). It is taken off the list
        before the write: a turn cancelled while the worker thread commits must not settle
        it twice. A write that failed (rolled back) puts it back, for the end of the turn."""
        reservation, row = pending = self._unsettled.pop(0)
        try:
            return await self.service.budget.settle(
                reservation, self.row.account_id, self.row.id, row, then=then
            )
        except Exception:
            self._unsettled.insert(0, pending)
            raise

    async def _append_assistant(self, done: Completion, superseded: str | None = None) -> int:
        content: dict[str, Any] = {
            "text": done.text,
            "model": self.model_used.name,
            "harness": self.model_used.harness,
            "usage": self.tally.usage.model_dump(),
            "cost_usd": round(self.tally.cost_usd, 10),
            "cost_estimated": self.tally.estimated,
            "latency_ms": self._latency_ms(),
            "finish_reason": done.finish_reason,
            "attempts": [a.model_dump() for a in self.attempts],
        }
        if self.plan.routing is not None:
            content["routing"] = self._routing()
        if self.dropped_turns:
            content["context"] = {
                "dropped_turns": self.dropped_turns,
                "why": f"the oldest turns did not fit in {self.plan.models[0].name}'s context",
            }
        if superseded:
            content["superseded"] = f"cascade escalated: {superseded}"
        return await self._append("assistant", content)

    # --- shapes --------------------------------------------------------------------------
    def _call(self, entry: ModelEntry, messages: list[Message]) -> Call:
        return Call(
            model=entry.name,
            system=self.body.system,
            messages=messages,
            tools=[RUN_TOOL] if self.run_tool is not None else [],
            max_output_tokens=self.plan.max_output_tokens,
            temperature=self.body.temperature,
        )

    def _own_tokens(self) -> int:
        return estimate_tokens((self.body.system or "") + self.body.input)

    def _latency_ms(self) -> float:
        return round((time.perf_counter() - self.received) * 1000.0, 3)

    def _routing(self) -> dict[str, Any] | None:
        decision = self.plan.routing
        if decision is None:
            return None
        return {
            "chosen_model": decision.model,
            "answered_by": self.model_used.name,
            "reason": decision.reason,
            "mode": decision.mode,
            "difficulty": decision.difficulty,
            "needed_tier": decision.needed_tier,
            "cascade": [e.name for e in [self.plan.models[0], *self.plan.ladder]]
            if self.plan.ladder
            else None,
            "candidates": [c.model_dump() for c in decision.candidates],
        }

    def _response(self, done: Completion, seq: int) -> RunLlmResponse:
        tried_more = len(self.attempts) > 1 or bool(self.body.fallbacks)
        return RunLlmResponse(
            session_id=self.row.id,
            model=self.model_used.name,
            harness=self.model_used.harness,
            output=done.text,
            usage=TokenUsage(
                input_tokens=self.tally.usage.input_tokens,
                output_tokens=self.tally.usage.output_tokens,
            ),
            cost_usd=round(self.tally.cost_usd, 10),
            latency_ms=self._latency_ms(),
            finish_reason=done.finish_reason,
            seq=seq,
            steps=self.steps or None,
            routing=self._routing(),
            attempts=[a.model_dump() for a in self.attempts] if tried_more else None,
            cost_estimated=True if self.tally.estimated else None,
        )
