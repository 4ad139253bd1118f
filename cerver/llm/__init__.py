"""Model turns in a session (docs/llm.md).

types.py          the neutral vocabulary: messages, tool calls, usage, completions
harnesses/        one module per model API, on the official SDKs (max_retries=0)
catalog.py        the models Cerver knows: harness, quality tier, context window
prices.py         usage x genai-prices (with deployment overrides)
keys.py           keys by name through the secrets backend; base URLs
conversation.py   the conversation rebuilt from the session transcript
routing.py        "model": "auto": features -> tier -> policy -> model (pure)
attempts.py       retries with Retry-After, then fallbacks; every try recorded
budget.py         reserve the worst case before a call, settle after
tools.py          the `run` tool
turn.py           one turn, from request to transcript, as a stream of events
service.py        what a replica keeps: catalog, prices, budget, harness clients
metrics.py        the llm_* metrics, premium baseline and savings
"""

from cerver.llm.service import LlmService
from cerver.llm.turn import Turn

__all__ = ["LlmService", "Turn"]
