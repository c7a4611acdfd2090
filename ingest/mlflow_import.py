"""Import from an MLflow tracking store or server (``lineagegraph ingest mlflow``).

Get → transform → load: ``read_mlflow`` reads what the tracking store knows with
``MlflowClient`` into an ``MlflowSnapshot``; ``to_batch`` maps the snapshot to one ``Batch``
(reading the store only to compare: which alias moves are new, which nodes change, for the
audit log); ``import_mlflow`` writes that batch with one upsert. One transaction for the
whole import is fine at the scale of a tracking store (thousands of runs, not millions),
and it keeps the import all-or-nothing.

Mapping (IDs follow design §2):

- experiment with runs → ``Job`` ``job:mlflow/{experiment name}``;
- run → ``TrainingRun`` ``run:{run_id}`` (params, metrics, status, started/ended), ``RUN_OF``
  its experiment's job;
- dataset input → ``DataSource`` ``source:{locator}`` and ``DatasetVersion``
  ``dataset:{locator}@{digest}`` (``VERSION_OF`` the source); the run ``CONSUMED`` it. The
  locator is the dataset source's URI when it has one (``s3://wh/payments.parquet``: the
  same ID OpenLineage's ``{namespace}/{name}`` gives that object), else
  ``{source_type}/{path or table}``, else ``mlflow/{dataset name}`` (data from code);
- registered model → ``Model`` ``model:{name}``, marked ``mlflow_registry`` (the registry
  URI, without credentials: which registry brought it); version → ``ModelVersion``
  ``model:{name}@{version}``, ``VERSION_OF`` the model, ``PRODUCED_BY`` its run (the
  version's ``run_id``, else its logged model's source run), ``SUPERSEDES`` the previous
  version (an import whose edge would close a cycle with versions manifests linked across
  names is refused). ``@`` in a model or prompt name (MLflow allows it in model names) is written
  ``%40``, as the OpenLineage mapper does: IDs split the version off at the last ``@``, so
  model ``m@1`` would be read as version 1 of ``m``;
- alias (of a registered model or a prompt) → a ``StageMove`` of its family ID
  (``model:{name}``, ``prompt:{name}``) into the environment named like
  the alias, appended only when another version (or none) is in effect there; a
  stage this importer set whose alias is gone moves to nothing. MLflow keeps no history
  of aliases, so a move is dated when the import saw it, and audited under the version's
  ID (``model:{name}@{version}``: the one moved to, or from when none). An alias that
  cannot name an environment (more than 64 characters) is skipped with a warning;
- a model or prompt version an earlier import brought and MLflow has since deleted stays
  (requests and lineage may name it), archived with ``deleted_in_mlflow``; so do the
  versions of a whole model or prompt MLflow deleted — one whose family an import from
  the same registry marked, that the registry lists no more — and the stages this importer
  set for it move to nothing. Finding those reads every ``Model`` and ``Prompt`` node of
  the graph, a page at a time; a prompt registry that could not be read deletes nothing;
- prompt → ``Prompt`` ``prompt:{name}``; version → ``PromptVersion`` ``prompt:{name}@{version}``
  (``VERSION_OF``, ``SUPERSEDES``; ``registry: mlflow`` marks it as the importer's);
  ``mlflow.linkedPrompts`` on a logged model or a run →
  ``DESIGNED_FOR`` from the prompt version to the registered versions of that model/run.

``created_at`` comes from MLflow's own timestamps (a dataset version's: the start of the
first run that read it), so a re-import writes the same nodes and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from lineagegraph.graph.store import GraphStore, UpsertResult
from lineagegraph.graph.walk import supersedes_loops
from lineagegraph.schema import AuditEntry, Edge, InvalidId, Node, StageMove, format_id
from lineagegraph.schema.ids import escape_at
from lineagegraph.schema.kinds import NODE_KINDS_BY_LABEL
from lineagegraph.schema.models import check_environment, error_message, now

from .batch import Batch, IngestError, Problem

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, Experiment, LoggedModel, Run
    from mlflow.entities.model_registry import (
        ModelVersion,
        Prompt,
        PromptVersion,
        RegisteredModel,
    )

ACTOR = "mlflow-import"  # stage moves this importer appends carry it, so it can retract them
NAMESPACE = "mlflow"  # of the jobs, and of the data sources of datasets built in code
LINKED_PROMPTS_TAG = "mlflow.linkedPrompts"
IS_PROMPT_TAG = "mlflow.prompt.is_prompt"
MLFLOW_REGISTRY = "mlflow"  # the ``registry`` of the prompt versions this importer brings
# On the Model and Prompt nodes this importer writes: the registry they came from, so a later
# import of that registry knows which families it brought when MLflow deletes one.
REGISTRY_MARK = "mlflow_registry"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
DATA_CONTEXT_TAG = "mlflow.data.context"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INSTALL_HINT = "the MLflow import needs the mlflow package: pip install 'lineagegraph[mlflow]'"

T = TypeVar("T")


# -- get ------------------------------------------------------------------------------------


@dataclass(slots=True)
class MlflowSnapshot:
    """What the tracking store knew when it was read: MLflow's own entities."""

    experiments: dict[str, Experiment] = field(default_factory=dict)  # by experiment ID
    runs: dict[str, Run] = field(default_factory=dict)  # by run ID
    models: list[RegisteredModel] = field(default_factory=list)  # with aliases filled in
    versions: list[ModelVersion] = field(default_factory=list)
    logged_models: dict[str, LoggedModel] = field(default_factory=dict)  # by model ID
    prompts: list[Prompt] = field(default_factory=list)
    prompt_versions: list[PromptVersion] = field(default_factory=list)  # aliases filled in
    prompts_read: bool = True  # False: the prompt registry failed, prompts unknown (not gone)
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """MLflow records read, for progress and the load summary."""
        return (len(self.experiments) + len(self.runs) + len(self.models) + len(self.versions)
                + len(self.prompts) + len(self.prompt_versions))


def sqlite_path(uri: str | None) -> Path | None:
    """The file of a ``sqlite:///path`` URI (relative, or absolute with a fourth slash)."""
    if not uri or not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def mlflow_client(tracking_uri: str, registry_uri: str | None = None) -> MlflowClient:
    try:
        from mlflow import MlflowClient
    except ImportError as error:
        raise IngestError(Problem(INSTALL_HINT)) from error
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)


def _pages(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    """Every item of a paged MLflow search (``fetch(page_token)`` returns a PagedList)."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def read_mlflow(client: MlflowClient) -> MlflowSnapshot:
    """Read experiments, runs, registered models with versions and aliases, the logged
    models those versions come from, and prompts with versions."""
    from mlflow.exceptions import MlflowException

    snap = MlflowSnapshot()
    for experiment in _pages(lambda t: client.search_experiments(page_token=t)):
        snap.experiments[experiment.experiment_id] = experiment
    for experiment_id in sorted(snap.experiments):  # one at a time: servers cap the list
        for run in _pages(lambda t, e=experiment_id: client.search_runs([e], page_token=t)):
            snap.runs[run.info.run_id] = run

    try:
        for prompt in _pages(lambda t: client.search_prompts(page_token=t)):
            snap.prompts.append(prompt)
            # Search results come back without aliases, as for models: a get fills them in.
            snap.prompt_versions += [
                client.get_prompt_version(prompt.name, found.version) for found in _pages(
                    lambda t, name=prompt.name: client.search_prompt_versions(
                        name, page_token=t))]
    except MlflowException as error:  # a registry without prompts still has models
        snap.prompts_read = False
        snap.warnings.append(f"prompt registry not read ({error.error_code}): {error.message}")
    prompt_names = {prompt.name for prompt in snap.prompts}

    # Model search omits prompts on current MLflow; the tag check keeps older servers honest.
    for model in _pages(lambda t: client.search_registered_models(page_token=t)):
        if model.name in prompt_names or model.tags.get(IS_PROMPT_TAG) == "true":
            continue
        # Search results may come back without aliases; a get fills them in.
        snap.models.append(client.get_registered_model(model.name))
    model_names = {model.name for model in snap.models}
    snap.versions = [v for v in _pages(lambda t: client.search_model_versions(page_token=t))
                     if v.name in model_names]

    for version in snap.versions:
        model_id = logged_model_id(version)
        if model_id is None or model_id in snap.logged_models:
            continue
        try:
            snap.logged_models[model_id] = client.get_logged_model(model_id)
        except MlflowException as error:
            snap.warnings.append(f"{version.name} v{version.version}: logged model "
                                 f"{model_id} unreadable ({error.error_code})")

    # A version's run may be deleted or in a deleted experiment: fetch it so the version
    # keeps its lineage (lineage of a registered model outlives the run's soft delete).
    for run_id in sorted({r for v in snap.versions if (r := producing_run_id(v, snap))}
                         - set(snap.runs)):
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            snap.warnings.append(f"run {run_id} unreadable ({error.error_code})")
            continue
        snap.runs[run_id] = run
        experiment_id = run.info.experiment_id
        if experiment_id not in snap.experiments:
            snap.experiments[experiment_id] = client.get_experiment(experiment_id)
    return snap


def logged_model_id(version: ModelVersion) -> str | None:
    """The logged model behind a registered version: ``model_id`` is None on the sqlite
    store, where the ``models:/m-<id>`` source still names it."""
    if version.model_id:
        return version.model_id
    source = version.source or ""
    if source.startswith("models:/m-"):
        return source.removeprefix("models:/").split("/", 1)[0]
    return None


def producing_run_id(version: ModelVersion, snap: MlflowSnapshot) -> str | None:
    if version.run_id:
        return version.run_id
    model_id = logged_model_id(version)
    logged = snap.logged_models.get(model_id) if model_id else None
    return logged.source_run_id if logged is not None else None


# -- transform ------------------------------------------------------------------------------


def utc_ms(millis: int | None, default: datetime = EPOCH) -> datetime:
    """MLflow's millisecond epochs as UTC datetimes (exact: no float rounding)."""
    return default if millis is None else EPOCH + timedelta(milliseconds=millis)


def user_tags(tags: dict[str, str] | None) -> dict[str, str]:
    """Tags people set; MLflow's own bookkeeping (``mlflow.*``, ``_mlflow*``) is dropped."""
    return {k: v for k, v in (tags or {}).items()
            if not k.startswith(("mlflow.", "_mlflow"))}


def _metric(value: float) -> float | str:
    # NaN and infinities are valid MLflow metrics but not JSON: keep them as text.
    return value if math.isfinite(value) else str(value)


def job_id(experiment: Experiment) -> str:
    return format_id("job", f"{NAMESPACE}/{experiment.name}")


def dataset_locator(dataset: Dataset) -> str:
    """The DataSource name of an MLflow dataset (see the module docstring)."""
    source = _json_or_text(dataset.source)
    if isinstance(source, dict):
        for key in ("uri", "url"):
            if isinstance(source.get(key), str) and source[key]:
                return source[key]
        for key in ("path", "table_name", "delta_table_name"):
            if isinstance(source.get(key), str) and source[key]:
                return f"{dataset.source_type}/{source[key]}"
    return f"{NAMESPACE}/{dataset.name}"


def _json_or_text(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass(slots=True)
class _Graph:
    """Nodes and edges being assembled; a node seen twice keeps its first (earliest) form."""

    registry: str  # the registry URI read (``REGISTRY_MARK``)
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Registered model versions by the run that produced them and by their logged model:
    # where ``mlflow.linkedPrompts`` tags are found.
    by_run: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    by_logged_model: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def node(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def edge(self, source: str, edge_type: str, target: str, **props: Any) -> None:
        self.edges.append(Edge(source=source, type=edge_type, target=target, properties=props))


def _add_runs(graph: _Graph, snap: MlflowSnapshot) -> None:
    # An experiment becomes a job once it has a run: MLflow's empty "Default" is not one.
    used = {run.info.experiment_id for run in snap.runs.values()}
    for experiment in (e for e in snap.experiments.values() if e.experiment_id in used):
        graph.node(Node(kind="Job", name=f"{NAMESPACE}/{experiment.name}",
                        created_at=utc_ms(experiment.creation_time),
                        properties={"namespace": NAMESPACE, "job_type": "mlflow_experiment",
                                    "experiment_id": experiment.experiment_id,
                                    "tags": user_tags(experiment.tags)}))
    # Oldest run first, so a dataset version's created_at is its first consumer's start.
    for run in sorted(snap.runs.values(), key=lambda r: (r.info.start_time or 0, r.info.run_id)):
        info = run.info
        started = utc_ms(info.start_time) if info.start_time else None
        run_id = graph.node(Node(
            kind="TrainingRun", name=info.run_id,
            created_at=started or utc_ms(snap.experiments[info.experiment_id].creation_time),
            properties={
                "run_name": info.run_name, "status": info.status, "user": info.user_id,
                "experiment_id": info.experiment_id, "lifecycle_stage": info.lifecycle_stage,
                "code_commit": run.data.tags.get(GIT_COMMIT_TAG),
                "params": dict(run.data.params),
                "metrics": {k: _metric(v) for k, v in run.data.metrics.items()},
                "started_at": started,
                "ended_at": utc_ms(info.end_time) if info.end_time else None,
                "tags": user_tags(run.data.tags),
            }))
        graph.edge(run_id, "RUN_OF", job_id(snap.experiments[info.experiment_id]))
        for dataset_input in run.inputs.dataset_inputs if run.inputs else ():
            version_id = _add_dataset(graph, dataset_input.dataset, started or EPOCH)
            context = {t.key: t.value for t in dataset_input.tags}.get(DATA_CONTEXT_TAG)
            graph.edge(run_id, "CONSUMED", version_id,
                       **({"context": context} if context else {}))


def _add_dataset(graph: _Graph, dataset: Dataset, first_seen: datetime) -> str:
    locator = dataset_locator(dataset)
    source = _json_or_text(dataset.source)
    source_id = graph.node(Node(
        kind="DataSource", name=locator, created_at=first_seen,
        properties={"uri": (source.get("uri") or source.get("url"))
                    if isinstance(source, dict) else None,
                    "source_type": dataset.source_type}))
    profile = _json_or_text(dataset.profile)
    version_id = graph.node(Node(
        kind="DatasetVersion", name=locator, version=escape_at(dataset.digest),
        created_at=first_seen,
        properties={
            "mlflow_name": dataset.name, "digest": dataset.digest,
            "source_type": dataset.source_type, "source": source,
            "schema": _json_or_text(dataset.schema),
            "schema_hash": hashlib.sha256(dataset.schema.encode()).hexdigest()[:16]
            if dataset.schema else None,
            "row_count": profile.get("num_rows") if isinstance(profile, dict) else None,
            "profile": profile,
        }))
    graph.edge(version_id, "VERSION_OF", source_id)
    return version_id


def _by_name(items: Sequence[T], name: Callable[[T], str]) -> dict[str, list[T]]:
    """Items grouped by name, each group in version order."""
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        groups[name(item)].append(item)
    return {key: sorted(group, key=lambda i: int(i.version)) for key, group in groups.items()}


def _add_family(graph: _Graph, kind: str, family: Any, versions: Sequence[Any],
                props: Callable[[Any], dict[str, Any]]) -> list[tuple[Any, str]]:
    """A registered model or prompt and its versions (in version order), each version
    ``VERSION_OF`` the family and ``SUPERSEDES`` the one before: [(version, its ID)]."""
    name = escape_at(family.name)
    family_id = graph.node(Node(kind=kind, name=name,
                                created_at=utc_ms(family.creation_timestamp),
                                properties={"description": family.description or None,
                                            "tags": user_tags(family.tags),
                                            REGISTRY_MARK: graph.registry}))
    added: list[tuple[Any, str]] = []
    for version in versions:
        version_id = graph.node(Node(kind=f"{kind}Version", name=name,
                                     version=version.version,
                                     created_at=utc_ms(version.creation_timestamp),
                                     properties=props(version)))
        graph.edge(version_id, "VERSION_OF", family_id)
        if added:
            graph.edge(version_id, "SUPERSEDES", added[-1][1])
        added.append((version, version_id))
    return added


def _add_models(graph: _Graph, snap: MlflowSnapshot) -> None:
    versions = _by_name(snap.versions, lambda v: v.name)
    for model in snap.models:
        for version, version_id in _add_family(graph, "Model", model,
                                               versions.get(model.name, []),
                                               _model_properties):
            run_id = producing_run_id(version, snap)
            if run_id in snap.runs:
                graph.edge(version_id, "PRODUCED_BY", format_id("run", run_id))
                graph.by_run[run_id].append(version_id)
            elif run_id is not None:
                graph.warnings.append(f"{version_id}: run {run_id} not imported; "
                                      "no PRODUCED_BY edge")
            if (model_id := logged_model_id(version)) is not None:
                graph.by_logged_model[model_id].append(version_id)


def _model_properties(version: ModelVersion) -> dict[str, Any]:
    return {"artifact_uri": version.source, "model_id": logged_model_id(version),
            "run_id": version.run_id, "status": version.status,
            "description": version.description or None, "tags": user_tags(version.tags)}


def _add_prompts(graph: _Graph, snap: MlflowSnapshot) -> None:
    versions = _by_name(snap.prompt_versions, lambda v: v.name)
    for prompt in snap.prompts:
        _add_family(graph, "Prompt", prompt, versions.get(prompt.name, []), _prompt_properties)


def _prompt_properties(version: PromptVersion) -> dict[str, Any]:
    template = version.template
    props: dict[str, Any] = {"registry": MLFLOW_REGISTRY,
                             "commit_message": version.commit_message,
                             "params": version.model_config or {},
                             "response_format": version.response_format,
                             "tags": user_tags(version.tags)}
    if isinstance(template, str):
        props["template"] = template
    else:  # a chat prompt: a list of {role, content} messages
        props["messages"] = template
        props["system"] = next((m.get("content") for m in template
                                if m.get("role") == "system"), None)
    return props


def _linked_prompts(tags: dict[str, str], where: str, warnings: list[str]) -> list[str]:
    """PromptVersion IDs named by an ``mlflow.linkedPrompts`` tag (a JSON list of
    ``{"name", "version"}``)."""
    text = tags.get(LINKED_PROMPTS_TAG)
    if not text:
        return []
    try:
        entries = json.loads(text)
        return [format_id("prompt", escape_at(str(e["name"])), e["version"]) for e in entries]
    except (json.JSONDecodeError, TypeError, KeyError):
        warnings.append(f"{where}: unreadable {LINKED_PROMPTS_TAG} tag {text!r}")
        return []


def _add_prompt_links(graph: _Graph, snap: MlflowSnapshot) -> None:
    """A prompt linked to a logged model is DESIGNED_FOR that model's registered versions;
    one linked to a run, for the versions that run produced."""
    holders = [("logged_model", model_id, logged.tags, graph.by_logged_model)
               for model_id, logged in snap.logged_models.items()]
    holders += [("run", run_id, run.data.tags, graph.by_run)
                for run_id, run in snap.runs.items()]
    vias: dict[tuple[str, str], set[str]] = defaultdict(set)  # one edge, however found
    for via, key, tags, registered in holders:
        for prompt_id in _linked_prompts(tags, f"{via} {key}", graph.warnings):
            if prompt_id not in graph.nodes:
                graph.warnings.append(f"{prompt_id} linked from {via} {key} is not in the "
                                      "prompt registry; link skipped")
                continue
            for version_id in registered.get(key, []):
                vias[(prompt_id, version_id)].add(via)
    for (prompt_id, version_id), found in sorted(vias.items()):
        graph.edge(prompt_id, "DESIGNED_FOR", version_id, via=sorted(found))


@dataclass(frozen=True, slots=True)
class Family:
    """A registered model or prompt, as the import compares it with the graph."""

    kind: str  # Model or Prompt
    name: str  # the name part of its IDs: ``@`` written ``%40``
    versions: frozenset[str]  # the versions MLflow lists: none once MLflow deleted it
    aliases: dict[str, str]  # alias → version

    @property
    def id(self) -> str:
        return format_id(NODE_KINDS_BY_LABEL[self.kind].prefix, self.name)


def families(snap: MlflowSnapshot, store: GraphStore, registry: str) -> list[Family]:
    """The registered models and prompts MLflow lists, then those an import of ``registry``
    brought earlier (their family node carries its ``REGISTRY_MARK``) that it lists no
    more: deleted in MLflow. A family another registry brought, or a manifest, is not
    ours to call deleted; nor is any prompt when the prompt registry could not be read."""
    versions: dict[tuple[str, str], set[str]] = defaultdict(set)
    for model_version in snap.versions:
        versions[("Model", model_version.name)].add(str(model_version.version))
    prompt_aliases: dict[str, dict[str, str]] = defaultdict(dict)
    for prompt_version in snap.prompt_versions:
        versions[("Prompt", prompt_version.name)].add(str(prompt_version.version))
        for alias in prompt_version.aliases or ():
            prompt_aliases[prompt_version.name][alias] = str(prompt_version.version)
    listed = [Family("Model", escape_at(model.name), frozenset(versions[("Model", model.name)]),
                     {alias: str(version) for alias, version in model.aliases.items()})
              for model in snap.models]
    listed += [Family("Prompt", escape_at(name), frozenset(versions[("Prompt", name)]),
                      prompt_aliases[name])
               for name in sorted(prompt.name for prompt in snap.prompts)]
    known = {(family.kind, family.name) for family in listed}
    kinds = ["Model", "Prompt"] if snap.prompts_read else ["Model"]
    gone = [Family(node.kind, node.name, frozenset(), {}) for node in store.all_nodes(kinds)
            if node.properties.get(REGISTRY_MARK) == registry
            and (node.kind, node.name) not in known]
    return listed + gone


def alias_moves(
    listed: Sequence[Family],
    in_effect: Callable[[str], list[StageMove]],
    at: datetime,
    warnings: list[str],
) -> list[StageMove]:
    """Stage moves for aliases that changed since the stage log last saw them.

    ``in_effect(name)`` is the last move of one name in each environment, oldest first
    (``GraphStore.stage_latest``). A model's stages are
    logged under its family ID (``model:{name}``), a prompt's under ``prompt:{name}``, so
    they never mix with a bundle of the same name (bundles log under their bare name). An
    alias is an environment; a move is appended only when the version in effect there
    differs, so a re-import appends none. A stage this importer set whose alias has since
    been deleted in MLflow (or whose model or prompt has) moves to nothing; stages set by
    others are left alone. An alias no environment can be named (``check_environment``:
    MLflow takes 255 characters, an environment 64) is skipped, said in ``warnings``.
    """
    moves = []
    for family in listed:
        stage_name = family.id
        current: dict[str, StageMove] = {}
        for move in in_effect(stage_name):
            current[move.environment] = move
        for environment, version in sorted(family.aliases.items()):
            try:
                check_environment(environment)
            except ValueError as error:
                warnings.append(f"{stage_name}: MLflow alias skipped: {error}")
                continue
            before = current.get(environment)
            if before is None or before.to_version != version:
                moves.append(StageMove(
                    name=stage_name, environment=environment, to_version=version,
                    from_version=before.to_version if before else None, at=at, actor=ACTOR,
                    reason=f"MLflow alias {environment!r} points at version {version}"))
        for environment, before in sorted(current.items()):
            if (environment not in family.aliases and before.actor == ACTOR
                    and before.to_version is not None):
                moves.append(StageMove(
                    name=stage_name, environment=environment, to_version=None,
                    from_version=before.to_version, at=at, actor=ACTOR,
                    reason=f"MLflow alias {environment!r} was removed"))
    return moves


def audit_entries(source: str, nodes: Sequence[Node], existing: dict[str, Node],
                  moves: Sequence[StageMove], at: datetime,
                  actor: str = ACTOR) -> list[AuditEntry]:
    """The load itself, each node it creates or changes (before/after), each stage move;
    ``actor`` is who ran the import."""
    entries = [AuditEntry(action="ingest.mlflow", target=source, actor=actor, at=at,
                          after={"nodes": len(nodes), "stage_moves": len(moves)})]
    for node in nodes:
        before = existing.get(node.id)
        if before is None or before.properties != node.properties:
            entries.append(AuditEntry(action="upsert", target=node.id, actor=actor, at=at,
                                      before=before.properties if before else None,
                                      after=node.properties))
    for move in moves:
        prefix, name = move.name.split(":", 1)  # a family ID: model:{name}, prompt:{name}
        entries.append(AuditEntry(
            action="stage_move", actor=actor, at=at,
            target=format_id(prefix, name, move.to_version or move.from_version),
            before={"environment": move.environment, "version": move.from_version},
            after={"environment": move.environment, "version": move.to_version}))
    return entries


def _imported(node: Node) -> bool:
    """A version this importer brought: a model version carries MLflow's ``status``, a
    prompt version the ``registry`` mark (MLflow's prompt versions have no field that a
    version registered by a manifest lacks)."""
    if node.kind == "ModelVersion":
        return "status" in node.properties
    return node.properties.get("registry") == MLFLOW_REGISTRY


def deleted_versions(listed: Sequence[Family], store: GraphStore) -> list[Node]:
    """Versions of ``listed`` families that an earlier import brought (``_imported``) and
    MLflow no longer has: deleted there, alone or with their model or prompt. Kept —
    requests and lineage may name them — but archived with ``deleted_in_mlflow``, so they
    are no registered, ready version any more, and walks and rollbacks pass them by."""
    gone = []
    for family in listed:
        for node in store.all_versions(f"{family.kind}Version", family.name):
            props = node.properties
            if (node.version not in family.versions and _imported(node)
                    and not props.get("deleted_in_mlflow")):
                gone.append(node.model_copy(update={"properties": {
                    **props, "archived": True, "deleted_in_mlflow": True}}))
    return gone


def redact(uri: str) -> str:
    """A tracking URI fit for the audit log: no ``user:password@``."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def to_batch(snap: MlflowSnapshot, store: GraphStore, source: str,
             at: datetime | None = None, actor: str = ACTOR,
             registry: str | None = None) -> tuple[Batch, list[str]]:
    """One batch holding the whole snapshot, the alias moves that are new and the audit
    entries; and what could not be mapped (dangling links, skipped aliases), said in words.
    Reads the store only to compare: the stage log (which moves are new), the nodes (what
    changes) and the families ``registry`` (default: ``source``) brought (which are gone).
    """
    given_at, at = at, at or now()
    registry = registry or source
    # Judged on what it reads, as every mapper from the graph: another writer landing
    # between the read and the write (a promotion of an aliased name, a manifest's
    # version) sends the snapshot back to be mapped again (``Batch.remap``).
    seen = store.metadata_seq()
    judged: dict[str, int | None] = {}

    def in_effect(name: str) -> list[StageMove]:
        # The seq first: a move landing after it refuses the write, even one the last
        # moves read next already hold. Not the history: imports append to it each time.
        judged[name] = store.last_stage_seq(name)
        return store.stage_latest(names=[name])

    graph = _Graph(registry)
    _add_runs(graph, snap)
    _add_prompts(graph, snap)
    _add_models(graph, snap)
    _add_prompt_links(graph, snap)
    listed = families(snap, store, registry)
    nodes = list(graph.nodes.values()) + deleted_versions(listed, store)
    moves = alias_moves(listed, in_effect, at, graph.warnings)
    stored = store.get([n.id for n in nodes])
    _refuse_supersedes_loops(store, graph.edges, stored)
    audit = audit_entries(source, nodes, stored, moves, at, actor)
    batch = Batch(nodes=nodes, edges=graph.edges, stage_moves=moves, audit=audit,
                  size=snap.size, metadata_seen=seen,
                  remap=lambda: to_batch(snap, store, source, given_at, actor, registry)[0],
                  judged=judged if moves else {})
    return batch, snap.warnings + graph.warnings


def _refuse_supersedes_loops(store: GraphStore, edges: Sequence[Edge],
                             stored: Mapping[str, Node]) -> None:
    """The registry's order makes each version supersede the one before it; only with
    versions a manifest linked to another name can such an edge close a cycle (``v1``
    supersedes ``other@1``, which supersedes ``v2``): the import is refused then."""
    loops = supersedes_loops(store, edges, stored)
    if loops:
        raise IngestError([Problem(loop.message(), record=loop.source, field="supersedes")
                           for loop in loops])


# -- load -----------------------------------------------------------------------------------


@dataclass(slots=True)
class MlflowImport:
    result: UpsertResult
    batch: Batch
    warnings: list[str]


def import_mlflow(store: GraphStore, tracking_uri: str, registry_uri: str | None = None,
                  actor: str = ACTOR) -> MlflowImport:
    """Read the tracking store at ``tracking_uri`` and write it in one transaction."""
    batch, warnings = read_batch(store, tracking_uri, registry_uri, actor)
    return MlflowImport(batch.write(store), batch, warnings)


def read_batch(store: GraphStore, tracking_uri: str, registry_uri: str | None = None,
               actor: str = ACTOR) -> tuple[Batch, list[str]]:
    """Get and transform, without writing: the batch ``import_mlflow`` would write.
    ``actor`` (who runs the import) signs the audit entries; stage moves are always
    signed ``ACTOR``, which is how a later import knows which stages it may retire."""
    for field_name, uri in (("tracking_uri", tracking_uri), ("registry_uri", registry_uri)):
        path = sqlite_path(uri)
        # MLflow would create an empty store at a mistyped path and import nothing.
        if path is not None and not path.is_file():
            raise IngestError(Problem(f"no MLflow database at {path}", field=field_name))
    client = mlflow_client(tracking_uri, registry_uri)
    from mlflow.exceptions import MlflowException

    try:
        snap = read_mlflow(client)
    except MlflowException as error:
        raise IngestError(Problem(f"reading MLflow at {redact(tracking_uri)}: "
                                  f"{error.message}", field="tracking_uri")) from error
    try:
        return to_batch(snap, store, redact(tracking_uri), actor=actor,
                        registry=redact(registry_uri or tracking_uri))
    except (ValidationError, InvalidId) as error:
        # A name, a time or properties no node can hold (``schema.bounds``: too long, a
        # control character, a run dated in the future): refused whole, saying which.
        raise IngestError(Problem(error_message(error), field="tracking_uri")) from None
