"""The relay: a user's own machine as a private compute of their account.

- ``protocol``: the typed messages on the one WebSocket between a relay and the gateway.
- ``agent``: the host side (``cerver relay``), Ray-free: login, the connection, execution in
  the same local sandbox as the ``local`` provider.
- ``hub`` + ``cerver.serve_app.routes_relay``: the gateway side (a Ray actor that routes
  calls from any process to the replica holding the relay's socket).

Nothing here imports Ray at module level except ``hub``; the agent must run without Ray.
"""
