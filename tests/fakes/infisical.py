"""A fake Infisical: its secrets read API over real HTTP on loopback, for `cerver-mcp`.

Speaks what the `infisical` backend uses, as Infisical answers it:
`GET /api/v3/secrets/raw/{secretName}` and `GET /api/v3/secrets/raw` (query `workspaceId`,
`environment`, `secretPath`; `Authorization: Bearer <service token>`), with Infisical's
error shape `{"reqId", "statusCode", "message", "error"}`. The token is scoped to one
project, like a service token. Every request is recorded (`requests`, or
`GET /_fake/requests` when run alone) so tests assert what the client sent.

    python -m tests.fakes.infisical --port 8899 --project proj_1 \
        --secret prod:/:OPENAI_API_KEY=sk-test
"""

from __future__ import annotations

import argparse
import json
import threading
import uuid
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

PREFIX = "/api/v3/secrets/raw"


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeInfisical:
    token: str = "st.fake-service-token.abc"
    project_id: str = "proj_fake_1"
    # (environment, secret path, key) -> value
    secrets: dict[tuple[str, str, str], str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)

    def put(self, name: str, value: str, environment: str = "prod", path: str = "/") -> None:
        self.secrets[(environment, path, name)] = value

    def start(self, port: int = 0) -> FakeInfisical:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = fake.answer(self.path, dict(self.headers.items()))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- the API ---------------------------------------------------------------------
    def answer(self, raw_path: str, headers: dict[str, str]) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        if parts.path == "/_fake/requests":
            return 200, [asdict(r) for r in self.requests]
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        lowered = {k.lower(): v for k, v in headers.items()}
        self.requests.append(Received("GET", parts.path, query, lowered))
        if parts.path == "/api/status":
            return 200, {"message": "Ok"}
        if parts.path != PREFIX and not parts.path.startswith(PREFIX + "/"):
            return _error(404, "NotFound", f"Route GET:{parts.path} not found")
        if lowered.get("authorization") != f"Bearer {self.token}":
            return _error(401, "UnauthorizedError", "Failed to authenticate unknown token")
        project, env = query.get("workspaceId"), query.get("environment")
        if not project or not env:
            return _error(400, "BadRequest", "Missing workspaceId or environment")
        if project != self.project_id:
            return _error(
                403, "PermissionDenied", f"You are not allowed to access project {project}"
            )
        path = query.get("secretPath", "/")
        if parts.path == PREFIX:
            hidden = query.get("viewSecretValue") == "false"
            found = [
                _secret(project, e, p, k, "<hidden-by-infisical>" if hidden else v)
                for (e, p, k), v in self.secrets.items()
                if (e, p) == (env, path)
            ]
            return 200, {"secrets": found, "imports": []}
        name = unquote(parts.path[len(PREFIX) + 1 :])
        value = self.secrets.get((env, path, name))
        if value is None:
            return _error(404, "NotFound", f"Secret with name '{name}' not found")
        return 200, {"secret": _secret(project, env, path, name, value)}


def _secret(project: str, env: str, path: str, key: str, value: str) -> dict[str, Any]:
    sid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{project}/{env}{path}{key}"))
    return {
        "id": sid,
        "_id": sid,
        "workspace": project,
        "environment": env,
        "version": 1,
        "type": "shared",
        "secretKey": key,
        "secretValue": value,
        "secretComment": "",
        "secretPath": path,
    }


def _error(status: int, error: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "reqId": f"req-{uuid.uuid4().hex[:12]}",
        "statusCode": status,
        "message": message,
        "error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake Infisical secrets API on loopback.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default=FakeInfisical.token)
    parser.add_argument("--project", default=FakeInfisical.project_id)
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="ENV:PATH:NAME=VALUE",
        help="a secret to serve, e.g. prod:/:OPENAI_API_KEY=sk-test (repeatable)",
    )
    args = parser.parse_args()
    fake = FakeInfisical(token=args.token, project_id=args.project)
    for spec in args.secret:
        where, value = spec.split("=", 1)
        env, path, name = where.split(":", 2)
        fake.put(name, value, environment=env, path=path)
    fake.start(args.port)
    print(f"fake Infisical on {fake.url} (project {fake.project_id})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
