"""CLI twins of the GraphQL queries. Each runs the same GraphQL document the API serves,
in-process against the configured store, then prints rich tables (or the JSON with
``--json``): one code path for both, so the CLI can never drift from the API."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lineagegraph.graph.governance import scored
from lineagegraph.schema.bounds import shown

from .cli_ingest import DbPath, NeoUri
from .graphql_schema import build_schema
from .graphql_types import Context
from .settings import Settings

console = Console()
err = Console(stderr=True)

AsJson = Annotated[bool, typer.Option("--json", help="print the GraphQL result as JSON")]

NODE = "id kind name version createdAt"


def run_query(query: str, variables: dict[str, Any], db: str | None,
              neo4j_uri: str | None) -> dict[str, Any]:
    settings = Settings.for_cli(db, neo4j_uri)
    store = settings.open_store()
    try:
        result = asyncio.run(build_schema(settings).execute(
            query, variable_values=variables, context_value=Context(store, settings)))
    finally:
        store.close()
    if result.errors:
        for error in result.errors:
            err.print(f"[red]error:[/red] {escape(error.message)}")
        raise typer.Exit(1)
    for warning in (result.extensions or {}).get("warnings", []):
        err.print(f"[yellow]warning:[/yellow] {escape(warning['message'])}")
    return result.data or {}


def emit(data: Any, as_json: bool) -> bool:
    """Print JSON and say so, or say the caller should render tables."""
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    return as_json


def node_line(node: dict[str, Any] | None) -> str:
    return "—" if node is None else node["id"]


def register(app: typer.Typer) -> None:
    app.command("trace")(trace)
    app.command("blast-radius")(blast_radius)
    app.command("drift-sources")(drift_sources)
    app.command("resolve")(resolve)


TRACE = f"""query ($requestId: String!) {{ trace(requestId: $requestId) {{
  outcome {{ {NODE} properties }} environment bundleLiveAtRequest
  bundle {{ id }} modelVersion {{ id }} promptVersion {{ id }} toolset {{ id }}
  policyPack {{ id }} approvals {{ id properties }} evaluations {{ id properties }}
  liveInEnvironment {{ id }}
  upstream {{ nodes {{ degree node {{ id kind }} }} edges {{ source type target }} truncated }}
}} }}"""


def trace(request_id: str, as_json: AsJson = False, db: DbPath = None,
          neo4j_uri: NeoUri = None) -> None:
    """Trace a request back to its data."""
    data = run_query(TRACE, {"requestId": request_id}, db, neo4j_uri)["trace"]
    if data is None:
        err.print(f"no request {escape(shown(request_id))}")
        raise typer.Exit(1)
    if emit(data, as_json):
        return
    served = Table(title=f"{data['outcome']['id']} at {data['outcome']['createdAt']} in "
                   f"{data['environment']}", show_header=False)
    served.add_column(style="bold")
    served.add_column()
    live = {True: "yes", False: "[red]no: served off-stage[/red]", None: "—"}
    for label, value in (
        ("bundle", node_line(data["bundle"])),
        ("live in that environment then", live[data["bundleLiveAtRequest"]]),
        ("model version", node_line(data["modelVersion"])),
        ("prompt version", node_line(data["promptVersion"])),
        ("tool set", node_line(data["toolset"])),
        ("policy pack", node_line(data["policyPack"])),
        ("approvals", ", ".join(a["id"] for a in data["approvals"]) or "none"),
        ("evaluations", ", ".join(
            f"{e['id']} {scored(e['properties'].get('score'), e['properties'].get('threshold'))}"
            for e in data["evaluations"]) or "none"),
        ("also live there then", ", ".join(n["id"] for n in data["liveInEnvironment"])),
    ):
        served.add_row(label, value)
    console.print(served)
    console.print(_subgraph_table("upstream", data["upstream"]))


def _subgraph_table(title: str, subgraph: dict[str, Any]) -> Table:
    table = Table(title=title + (" (truncated by a cap)" if subgraph["truncated"] else ""))
    table.add_column("hops", justify="right")
    table.add_column("kind")
    table.add_column("id")
    for entry in subgraph["nodes"]:
        table.add_row(str(entry["degree"]), entry["node"]["kind"], entry["node"]["id"])
    return table


BLAST = f"""query ($id: ID!, $action: Action, $since: DateTime, $until: DateTime) {{
  blastRadius(id: $id, action: $action, since: $since, until: $until) {{
    root {{ {NODE} }} action byKind {{ kind count }}
    bundles {{ bundle {{ id }} environments }} traffic {{ environment count }} totalTraffic
    rollbackTarget {{ id }} rollbacks {{ environment current {{ id }} target {{ id }} warnings }}
    warnings downstream {{ nodes {{ degree node {{ id kind }} }} truncated }}
}} }}"""


def blast_radius(
    node_id: Annotated[str, typer.Argument(metavar="ID")],
    action: Annotated[str, typer.Option(help="ROLLBACK, RETIRE or CHANGE")] = "ROLLBACK",
    since: Annotated[datetime | None, typer.Option(help="traffic window start")] = None,
    until: Annotated[datetime | None, typer.Option(help="traffic window end")] = None,
    as_json: AsJson = False,
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """What rolling back, retiring or changing a node would hit."""
    variables = {"id": node_id, "action": action.upper(),
                 "since": since.isoformat() if since else None,
                 "until": until.isoformat() if until else None}
    data = run_query(BLAST, variables, db, neo4j_uri)["blastRadius"]
    if data is None:
        err.print(f"no node {escape(shown(node_id))}")
        raise typer.Exit(1)
    if emit(data, as_json):
        return
    kinds = ", ".join(f"{k['count']} {k['kind']}" for k in data["byKind"]) or "—"
    console.print(f"[bold]{data['action']}[/bold] {data['root']['id']}: "
                  f"{sum(k['count'] for k in data['byKind'])} nodes downstream ({kinds})")
    # The answer's own warnings (a count in doubt, a walk cut by a cap) first; the
    # rollback plans' are printed with each plan below.
    per_plan = {f"{p['environment']}: {w}" for p in data["rollbacks"] for w in p["warnings"]}
    for warning in data["warnings"]:
        if warning not in per_plan:
            console.print(f"[yellow]⚠ {warning}[/yellow]")
    bundles = Table(title="affected bundles")
    bundles.add_column("bundle")
    bundles.add_column("live in")
    for entry in data["bundles"]:
        bundles.add_row(entry["bundle"]["id"], ", ".join(entry["environments"]) or "—")
    console.print(bundles)
    traffic = Table(title=f"traffic ({data['totalTraffic']:,} requests)")
    traffic.add_column("environment")
    traffic.add_column("requests", justify="right")
    for row in data["traffic"]:
        traffic.add_row(row["environment"], f"{row['count']:,}")
    console.print(traffic)
    for plan in data["rollbacks"]:
        console.print(f"rollback in [bold]{plan['environment']}[/bold]: "
                      f"{plan['current']['id']} → {node_line(plan['target'])}")
        for warning in plan["warnings"]:
            console.print(f"  [yellow]⚠ {warning}[/yellow]")


DRIFT = """query ($id: ID!, $onset: DateTime!, $lookback: String) {
  driftSources(id: $id, onset: $onset, lookback: $lookback) {
    node { id kind } change changedAt hops score path } }"""


def drift_sources(
    node_id: Annotated[str, typer.Argument(metavar="ID")],
    onset: Annotated[datetime, typer.Option(help="when quality dropped")],
    lookback: Annotated[str, typer.Option(help="ISO 8601 duration")] = "P7D",
    as_json: AsJson = False,
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """Upstream changes before a quality drop, ranked."""
    data = run_query(DRIFT, {"id": node_id, "onset": onset.isoformat(), "lookback": lookback},
                     db, neo4j_uri)["driftSources"]
    if emit(data, as_json):
        return
    table = Table(title=f"drift sources of {node_id} in the {lookback} before {onset}")
    for column in ("score", "change", "node", "changed at", "hops", "path"):
        table.add_column(column, overflow="fold")
    for c in data:
        table.add_row(f"{c['score']:.3f}", c["change"], c["node"]["id"], c["changedAt"],
                      str(c["hops"]), " → ".join(c["path"]))
    console.print(table)


RESOLVE = f"""query ($name: String!, $env: String!, $asOf: DateTime) {{
  resolve(name: $name, environment: $env, asOf: $asOf) {{ {NODE} properties
    ... on Bundle {{ modelVersion {{ id }} promptVersion {{ id }} toolset {{ id }}
                    policyPack {{ id }} retrievesFrom {{ id }} }} }} }}"""


def resolve(
    name: str,
    environment: str,
    as_of: Annotated[datetime | None, typer.Option("--as-of", help="default: now")] = None,
    as_json: AsJson = False,
    db: DbPath = None,
    neo4j_uri: NeoUri = None,
) -> None:
    """The bundle version in effect in an environment (now or as of a time)."""
    data = run_query(RESOLVE, {"name": name, "env": environment,
                               "asOf": as_of.isoformat() if as_of else None},
                     db, neo4j_uri)["resolve"]
    if emit(data, as_json):
        return
    if data is None:
        console.print(f"nothing of {name} was in {environment} then")
        return
    table = Table(title=f"{name} in {environment}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in (
        ("bundle", data["id"]), ("model version", node_line(data["modelVersion"])),
        ("prompt version", node_line(data["promptVersion"])),
        ("tool set", node_line(data["toolset"])), ("policy pack", node_line(data["policyPack"])),
        ("retrieves from", ", ".join(n["id"] for n in data["retrievesFrom"]) or "—"),
        ("params", json.dumps(data["properties"].get("params", {}))),
    ):
        table.add_row(label, value)
    console.print(table)
