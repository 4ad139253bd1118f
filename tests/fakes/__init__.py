"""Fake provider servers speaking each provider's real wire protocol over real HTTP.

Each is runnable on its own (``python -m tests.fakes.<name> --port N``) and executes
commands for real in a local sandbox (``tests.fakes.local_backend``)."""
