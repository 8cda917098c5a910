"""A real Iceberg REST catalog on loopback for the Iceberg connector's tests: the REST catalog
protocol (Apache Iceberg's `rest-catalog-open-api.yaml`: config, OAuth tokens, namespaces,
staged creates, table loads and commits with their requirements, drops) served by starlette and
uvicorn in a process of its own, keeping its tables in pyiceberg's SQL catalog on SQLite.

Apache's reference server is Java, fetched from Maven Central, which these machines cannot
reach; the commit rules here are pyiceberg's own (a requirement that no longer holds is a 409,
as the protocol says), so what the tests exercise is arrowline through pyiceberg's REST client
over HTTP, against a server that refuses what a real one refuses: a missing or wrong bearer
token (401), a stale commit (409), an unknown table or namespace (404).

Run: `ICEBERG_REST_TOKEN=T ICEBERG_REST_CLIENT=ID:SECRET python -m tests.iceberg_rest --port P
--folder DIR` (the secrets from the environment, never the command line).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

__all__ = ["ISSUED", "RestCatalog", "rest_catalog", "rest_catalog_server"]

ISSUED = "issued-tokens.txt"
"""The access tokens the server issued, a line each, in its folder beside its log."""
CLIENT = "arrowline-tests"
"""The OAuth client id the test server knows; its secret is made per session."""


@dataclass(frozen=True)
class RestCatalog:
    """What a test needs: the catalog's URI, the bearer token it accepts, the OAuth client
    credential it exchanges for one, and a namespace of the test's own."""

    uri: str
    token: str
    credential: str
    namespace: str
    log: Path

    def issued(self) -> list[str]:
        """The access tokens the catalog issued for OAuth credentials so far."""
        kept = self.log.parent / ISSUED
        return kept.read_text().split() if kept.exists() else []


@dataclass(frozen=True)
class _Server:
    uri: str
    token: str
    credential: str
    log: Path


@pytest.fixture(scope="session")
def rest_catalog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    try:
        import pyiceberg.catalog.sql  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:  # never skipped: a missing fixture is a failure
        pytest.fail(
            "the REST catalog needs pyiceberg and uvicorn: .venv/bin/pip install -e '.[dev]'"
        )
    from tests.pg import free_port, loopback_server

    folder = tmp_path_factory.mktemp("iceberg-rest")
    token, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    port = free_port()
    log = folder / "server.log"
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "ICEBERG_REST_TOKEN": token}
    env["ICEBERG_REST_CLIENT"] = f"{CLIENT}:{secret}"
    command = [sys.executable, "-m", "tests.iceberg_rest", "--port", str(port)]
    with loopback_server(
        "the REST catalog", [*command, "--folder", str(folder)], port, log, cwd=root, env=env
    ):
        yield _Server(f"http://127.0.0.1:{port}", token, f"{CLIENT}:{secret}", log)


@pytest.fixture
def rest_catalog(rest_catalog_server: _Server) -> RestCatalog:
    """The session's REST catalog, with a namespace no other test uses."""
    server = rest_catalog_server
    return RestCatalog(
        server.uri, server.token, server.credential, f"t{secrets.token_hex(4)}", server.log
    )


# --- the server --------------------------------------------------------------------------------


def _app(folder: Path, token: str, client: str) -> Any:
    from pyiceberg.catalog.rest import CreateTableRequest
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import (
        CommitFailedException,
        NamespaceAlreadyExistsError,
        NamespaceNotEmptyError,
        NoSuchNamespaceError,
        NoSuchTableError,
        TableAlreadyExistsError,
    )
    from pyiceberg.table import CommitTableRequest
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    catalog = SqlCatalog(
        "rest",
        uri=f"sqlite:///{folder / 'catalog.db'}",
        warehouse=(folder / "warehouse").as_uri(),
    )
    tokens = {token}
    errors: dict[type[Exception], tuple[int, str]] = {
        NoSuchTableError: (404, "NoSuchTableException"),
        NoSuchNamespaceError: (404, "NoSuchNamespaceException"),
        TableAlreadyExistsError: (409, "AlreadyExistsException"),
        NamespaceAlreadyExistsError: (409, "AlreadyExistsException"),
        NamespaceNotEmptyError: (409, "NamespaceNotEmptyException"),
        CommitFailedException: (409, "CommitFailedException"),
    }

    def error(code: int, kind: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, code)

    def namespace(request: Request) -> tuple[str, ...]:
        """The path's namespace as the SQL catalog keeps it: one level, its parts joined by
        dots (the SQL catalog has no nesting; the protocol does)."""
        return (".".join(request.path_params["namespace"].split("\x1f")),)

    def table_result(metadata_location: str | None, metadata: Any) -> JSONResponse:
        body = {
            "metadata-location": metadata_location,
            "metadata": json.loads(metadata.model_dump_json(by_alias=True, exclude_none=True)),
            "config": {},
        }
        return JSONResponse(body)

    class _Named:
        def __init__(self, identifier: tuple[str, ...]) -> None:
            self.identifier = identifier

        def name(self) -> tuple[str, ...]:
            return self.identifier

    def endpoint(kind: str) -> Any:
        async def handle(request: Request) -> Response:
            if kind == "oauth":
                return await oauth(request)
            if request.headers.get("authorization", "").removeprefix("Bearer ") not in tokens:
                return error(401, "NotAuthorizedException", "a valid bearer token is needed")
            try:
                return await route(request, kind)
            except tuple(errors) as exc:
                code, name = next(v for k, v in errors.items() if isinstance(exc, k))
                return error(code, name, str(exc))

        return handle

    async def oauth(request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        if f"{form.get('client_id')}:{form.get('client_secret')}" != client:
            return JSONResponse({"error": "invalid_client"}, 401)
        issued = secrets.token_urlsafe(16)
        tokens.add(issued)
        with (folder / ISSUED).open("a") as kept:  # for the tests: no output may hold one
            kept.write(issued + "\n")
        return JSONResponse(
            {
                "access_token": issued,
                "token_type": "bearer",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "expires_in": 3600,
            }
        )

    async def route(request: Request, kind: str) -> Response:
        method, params = request.method, request.path_params
        if kind == "config":
            return JSONResponse({"defaults": {}, "overrides": {}})
        if kind == "namespaces":
            if method == "POST":
                body = await request.json()
                levels = body["namespace"]
                if len(levels) > 1 and not catalog.namespace_exists(".".join(levels[:-1])):
                    raise NoSuchNamespaceError(f"no parent namespace {levels[:-1]}")
                catalog.create_namespace((".".join(levels),), body.get("properties", {}))
                return JSONResponse({"namespace": body["namespace"], "properties": {}})
            listed = [n[0].split(".") for n in catalog.list_namespaces()]
            return JSONResponse({"namespaces": listed})
        if kind == "namespace":
            if method == "DELETE":
                catalog.drop_namespace(namespace(request))
                return Response(status_code=204)
            properties = catalog.load_namespace_properties(namespace(request))
            if method == "HEAD":
                return Response(status_code=204)
            return JSONResponse({"namespace": list(namespace(request)), "properties": properties})
        if kind == "tables":
            if method == "GET":
                found = catalog.list_tables(namespace(request))
                listed = [{"namespace": t[0].split("."), "name": t[-1]} for t in found]
                return JSONResponse({"identifiers": listed})
            body = {"location": None, "partition-spec": None, "write-order": None}
            create = CreateTableRequest.model_validate({**body, **await request.json()})
            identifier = (*namespace(request), create.name)
            options: dict[str, Any] = {"location": create.location, "properties": create.properties}
            if create.partition_spec is not None:
                options["partition_spec"] = create.partition_spec
            if create.write_order is not None:
                options["sort_order"] = create.write_order
            if create.stage_create:
                if catalog.table_exists(identifier):
                    raise TableAlreadyExistsError(f"Table {'.'.join(identifier)} already exists")
                catalog.load_namespace_properties(namespace(request))
                staged = catalog._create_staged_table(identifier, create.table_schema, **options)
                return table_result(None, staged.metadata)
            made = catalog.create_table(identifier, create.table_schema, **options)
            return table_result(made.metadata_location, made.metadata)
        identifier = (*namespace(request), params["table"])
        if method == "HEAD":
            catalog.load_table(identifier)
            return Response(status_code=204)
        if method == "GET":
            loaded = catalog.load_table(identifier)
            return table_result(loaded.metadata_location, loaded.metadata)
        if method == "DELETE":
            purge = request.query_params.get("purgeRequested") == "true"
            (catalog.purge_table if purge else catalog.drop_table)(identifier)
            return Response(status_code=204)
        commit = CommitTableRequest.model_validate_json(await request.body())
        done = catalog.commit_table(_Named(identifier), commit.requirements, commit.updates)  # type: ignore[arg-type]
        return table_result(done.metadata_location, done.metadata)

    everything = ["GET", "POST", "HEAD", "DELETE"]
    return Starlette(
        routes=[
            Route("/v1/oauth/tokens", endpoint("oauth"), methods=["POST"]),
            Route("/v1/config", endpoint("config"), methods=["GET"]),
            Route("/v1/namespaces", endpoint("namespaces"), methods=["GET", "POST"]),
            Route("/v1/namespaces/{namespace}", endpoint("namespace"), methods=everything),
            Route("/v1/namespaces/{namespace}/tables", endpoint("tables"), methods=everything),
            Route(
                "/v1/namespaces/{namespace}/tables/{table}", endpoint("table"), methods=everything
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", type=Path, required=True)
    arguments = parser.parse_args()
    import uvicorn

    app = _app(
        arguments.folder, os.environ["ICEBERG_REST_TOKEN"], os.environ["ICEBERG_REST_CLIENT"]
    )
    uvicorn.run(app, host="127.0.0.1", port=arguments.port, log_level="warning")


if __name__ == "__main__":
    main()
