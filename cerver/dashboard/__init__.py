"""The dashboard: server-rendered pages at /dashboard on the same Serve ingress as the API.

Jinja2 templates, with three small front-end libraries vendored from the npm registry at
pinned versions (``static/vendor/``, licenses beside them): htmx for the live transcript and
partial updates, uPlot for charts, Pico for styling. Nothing is loaded from another host.

A browser signs in with an API token once; it then holds only a random session id in an
HttpOnly, SameSite=Strict cookie (``auth.py``). Pages show the data the API returns for the
account, built by the same view functions (``serve_app/views.py``).
"""

from cerver.dashboard.pages import install

__all__ = ["install"]
