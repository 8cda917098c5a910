"""OpenLineage run events: sent to a file and to a loopback HTTP endpoint, and checked against the
OpenLineage model.

The check structures every event into the classes of the official `openlineage-python` client,
which the OpenLineage project generates from its JSON schema (OpenLineage.json and the facet
schemas): every key must be a field of the class the schema puts there, every required field must
be present with the right type, the client's validators run (UUID run ids, ISO date-times with a
time), and each facet's `_schemaURL` must be the schema that class was generated from.
"""

from __future__ import annotations

import json
import threading
import typing
from collections.abc import Iterator
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attr
import pytest
from openlineage.client.generated import (
    base,
    column_lineage_dataset,
    error_message_run,
    job_type_job,
    nominal_time_run,
    parent_run,
    schema_dataset,
    sql_job,
)

from engine.api.pipeline import run
from tests.conftest import WritePipeline

FACETS: dict[str, type] = {
    "schema": schema_dataset.SchemaDatasetFacet,
    "columnLineage": column_lineage_dataset.ColumnLineageDatasetFacet,
    "parent": parent_run.ParentRunFacet,
    "nominalTime": nominal_time_run.NominalTimeRunFacet,
    "errorMessage": error_message_run.ErrorMessageRunFacet,
    "jobType": job_type_job.JobTypeJobFacet,
    "sql": sql_job.SQLJobFacet,
}


def _convert(hint: Any, value: Any, where: str, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where, key)
    if origin is list:
        assert isinstance(value, list), f"{where}: expected a list"
        return [_convert(args[0], v, f"{where}[{i}]", key) for i, v in enumerate(value)]
    if origin is dict:
        assert isinstance(value, dict), f"{where}: expected an object"
        if key.lower().endswith("facets"):
            return {
                name: structure(FACETS[name], facet, f"{where}.{name}")
                for name, facet in value.items()
            }
        return {k: _convert(args[1], v, f"{where}.{k}", k) for k, v in value.items()}
    if isinstance(hint, type) and attr.has(hint):
        return structure(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if hint is Any:
        return value
    assert isinstance(value, hint), f"{where}: expected {hint.__name__}, got {value!r}"
    return value


def structure(cls: type, data: Any, where: str = "event") -> Any:
    """`data` as an instance of the generated class `cls`, or an AssertionError saying where."""
    assert isinstance(data, dict), f"{where}: expected an object"
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attr.fields(cls)}
    unknown = set(data) - set(fields)
    assert not unknown, f"{where}: keys not in the OpenLineage schema: {sorted(unknown)}"
    kwargs, schema_url = {}, None
    for name, field in fields.items():
        if name in ("schemaURL", "_schemaURL"):
            schema_url = data.get(name)
            continue
        if name not in data:
            assert field.default is not attr.NOTHING, f"{where}: required {name!r} is missing"
            continue
        kwargs[field.alias or name] = _convert(hints[name], data[name], f"{where}.{name}", name)
    instance = cls(**kwargs)  # the client's validators run here
    if schema_url is not None:
        assert schema_url == instance._get_schema(), f"{where}: _schemaURL {schema_url}"
    return instance


def validate(event: dict[str, Any]) -> base.RunEvent:
    assert event["schemaURL"] == base.RunEvent._get_schema()
    return typing.cast(base.RunEvent, structure(base.RunEvent, event))


class _Receiver(BaseHTTPRequestHandler):
    events: list[dict[str, Any]]
    headers_seen: list[str]
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).headers_seen.append(self.headers.get("Authorization", ""))
        if type(self).status == 200:
            type(self).events.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"events": [], "headers_seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


PIPELINE = """
pipeline: shop
openlineage:
  url: {url}
  file: lineage/events.ndjson
  api_key: ${{env:OL_TEST_KEY}}
  namespace: analytics
tasks:
  - id: orders
    extract: {{from: files, path: data/orders.csv}}
  - id: paid
    sql: select id, amount * 2 as amount from orders where status = 'paid'
  - id: publish
    load: {{input: paid, to: parquet, path: out/paid.parquet}}
  - id: warehouse
    load: {{input: paid, to: duckdb, path: out/wh.duckdb, table: paid}}
"""


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_run_sends_valid_events_with_column_lineage(
    write: WritePipeline,
    project: Path,
    receiver: tuple[str, type[_Receiver]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, handler = receiver
    monkeypatch.setenv("OL_TEST_KEY", "s3cret-token")
    write("data/orders.csv", "id,amount,status\n1,10,paid\n2,5,open\n")
    path = write("p.yaml", PIPELINE.format(url=url))
    assert run(path).ok

    events = _events(project / "lineage" / "events.ndjson")
    assert events == handler.events  # the file and the endpoint got the same events, in order
    assert set(handler.headers_seen) == {"Bearer s3cret-token"}
    assert "s3cret-token" not in (project / "lineage" / "events.ndjson").read_text()
    for event in events:
        validate(event)

    pipeline_events = [e for e in events if e["job"]["name"] == "shop"]
    assert [e["eventType"] for e in pipeline_events] == ["START", "COMPLETE"]
    assert events[0]["job"]["name"] == "shop"
    assert events[-1]["job"]["name"] == "shop"
    run_id = events[0]["run"]["runId"]
    assert events[-1]["run"]["runId"] == run_id
    assert events[0]["job"]["namespace"] == "analytics"

    for task in ("orders", "paid", "publish", "warehouse"):
        mine = [e for e in events if e["job"]["name"] == f"shop.{task}"]
        assert [e["eventType"] for e in mine] == ["START", "COMPLETE"], task
        assert mine[0]["run"]["runId"] == mine[1]["run"]["runId"] != run_id
        assert mine[1]["run"]["facets"]["parent"]["run"]["runId"] == run_id

    csv = str((project / "data" / "orders.csv").resolve())
    final = events[-1]
    assert [(d["namespace"], d["name"]) for d in final["inputs"]] == [("file", csv)]
    outputs = {(d["namespace"], d["name"]): d for d in final["outputs"]}
    parquet = ("file", str((project / "out" / "paid.parquet").resolve()))
    duck = (f"duckdb://{(project / 'out' / 'wh.duckdb').resolve()}", "main.paid")
    assert set(outputs) == {parquet, duck}
    for dataset in outputs.values():
        fields = dataset["facets"]["columnLineage"]["fields"]
        assert fields["amount"]["inputFields"] == [
            {
                "namespace": "file",
                "name": csv,
                "field": "amount",
                "transformations": [{"type": "DIRECT", "subtype": "TRANSFORMATION"}],
            },
            {
                "namespace": "file",
                "name": csv,
                "field": "status",
                "transformations": [{"type": "INDIRECT", "subtype": "FILTER"}],
            },
        ]
        assert [f["name"] for f in dataset["facets"]["schema"]["fields"]] == ["id", "amount"]

    paid = next(
        e for e in events if e["job"]["name"] == "shop.paid" and e["eventType"] == "COMPLETE"
    )
    assert paid["job"]["facets"]["sql"]["query"].startswith("select id, amount * 2")
    (output,) = paid["outputs"]
    assert output["name"].endswith("/.arrowline/workspace/shop/paid")
    sources = output["facets"]["columnLineage"]["fields"]["amount"]["inputFields"]
    assert {(s["name"].rsplit("/", 1)[-1], s["field"]) for s in sources} == {
        ("orders", "amount"),
        ("orders", "status"),
    }


def test_a_failed_task_sends_fail_with_its_error(
    write: WritePipeline, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARROWLINE_OPENLINEAGE_FILE", str(project / "events.ndjson"))
    write("data/orders.csv", "id,amount,status\n1,10,paid\n")
    path = write(
        "p.yaml",
        """
        pipeline: broken
        tasks:
          - id: orders
            extract: {from: files, path: data/orders.csv}
          - id: bad
            retry: {attempts: 1}
            sql: select cast(status as int) as n from orders
        """,
    )
    assert not run(path).ok
    events = _events(project / "events.ndjson")
    for event in events:
        validate(event)
    bad = [e for e in events if e["job"]["name"] == "broken.bad"]
    assert [e["eventType"] for e in bad] == ["START", "FAIL"]
    assert "paid" in bad[1]["run"]["facets"]["errorMessage"]["message"]
    assert events[-1]["eventType"] == "FAIL"
    assert events[-1]["job"]["name"] == "broken"


def test_an_endpoint_that_refuses_never_fails_the_run(
    write: WritePipeline,
    project: Path,
    receiver: tuple[str, type[_Receiver]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, handler = receiver
    handler.status = 500
    monkeypatch.setenv("OL_TEST_KEY", "k")
    write("data/orders.csv", "id,amount,status\n1,10,paid\n")
    path = write("p.yaml", PIPELINE.format(url=url))
    assert run(path).ok
    assert len(handler.headers_seen) == 3  # one event, retried; then the endpoint is left alone
    assert handler.events == []
    assert len(_events(project / "lineage" / "events.ndjson")) == 10  # the file still got them


def test_the_validator_rejects_what_the_schema_does_not_allow() -> None:
    """The check can fail: a run id that is not a UUID, a missing job, an unknown key."""
    good = {
        "eventType": "START",
        "eventTime": "2026-11-22T10:00:00+00:00",
        "producer": "https://github.com/arrowline/arrowline",
        "schemaURL": base.RunEvent._get_schema(),
        "run": {"runId": "3f1c7a0e-8a4b-4a8e-9d56-1c2b3a4d5e6f", "facets": {}},
        "job": {"namespace": "n", "name": "j", "facets": {}},
        "inputs": [],
        "outputs": [],
    }
    validate(good)
    with pytest.raises(ValueError, match=r"UUID|badly formed"):
        validate({**good, "run": {"runId": "20261122T100000Z-1", "facets": {}}})
    with pytest.raises(AssertionError, match="required 'job'"):
        validate({k: v for k, v in good.items() if k != "job"})
    with pytest.raises(AssertionError, match="not in the OpenLineage schema"):
        validate({**good, "job": {"namespace": "n", "name": "j", "owner": "me"}})
    with pytest.raises(ValueError, match="is not a valid EventType"):
        validate({**good, "eventType": "DONE"})
    lineage_facet = {
        "_producer": "https://github.com/arrowline/arrowline",
        "_schemaURL": column_lineage_dataset.ColumnLineageDatasetFacet._get_schema(),
        "fields": {"a": {"inputFields": [{"namespace": "file", "name": "/x", "field": "a"}]}},
    }
    dataset = {"namespace": "file", "name": "/y", "facets": {"columnLineage": lineage_facet}}
    validate({**good, "outputs": [dataset]})
    broken = {**lineage_facet, "fields": {"a": {"inputs": []}}}
    with pytest.raises(AssertionError, match="not in the OpenLineage schema"):
        validate({**good, "outputs": [{**dataset, "facets": {"columnLineage": broken}}]})
    wrong_url = {**lineage_facet, "_schemaURL": "https://example.com/facet.json"}
    with pytest.raises(AssertionError, match="_schemaURL"):
        validate({**good, "outputs": [{**dataset, "facets": {"columnLineage": wrong_url}}]})
