"""The dead-letter store through the CLI and REST: list, replay once the cause is fixed, and
report what is still failing — on both stores."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from lineagegraph.graph.store import GraphStore, RecordFilter
from lineagegraph.ingest import deadletter
from lineagegraph.ingest.batch import Batch, IngestError, Problem
from lineagegraph.ingest.deadletter import dead_letter, pending
from lineagegraph.ingest.manifest_formats import read_directory, read_yaml
from lineagegraph.ingest.manifests import map_manifests
from lineagegraph.schema import Record

from .ingest_support import MANIFESTS, cli_args, client_for, edges_of, run_cli

GOOD = {"request_id": "req-1", "timestamp": "2026-11-20T10:00:00Z",
        "environment": "production", "bundle": "support-triage@14"}
UNKNOWN_BUNDLE = GOOD | {"request_id": "req-2", "bundle": "support-triage@16"}


@pytest.fixture
def letters(store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """A CLI load with one line naming a bundle not registered yet; its letter's key."""
    map_manifests(read_directory(MANIFESTS), store, actor="test").write(store)
    path = tmp_path / "outcomes.ndjson"
    path.write_text("\n".join(json.dumps(r) for r in (GOOD, UNKNOWN_BUNDLE)) + "\n")
    assert run_cli("ingest", "outcomes", str(path), *cli_args(store, request)).exit_code == 1
    return [letter.key for letter in pending(store)]


def register_v16(store: GraphStore) -> None:
    map_manifests(read_yaml("name: support-triage\nversion: 16\nmodel: gpt-5-mini-2026-08\n"),
                  store, actor="test").write(store)


def test_list_shows_key_source_reason_and_when(
    store: GraphStore, request: pytest.FixtureRequest, letters: list[str],
) -> None:
    result = run_cli("deadletter", "list", *cli_args(store, request))
    with client_for(store) as client:
        listed = client.get("/api/v1/deadletter").json()["items"]

    assert result.exit_code == 0
    assert letters[0][:12] in result.output and "outcomes" in result.output
    assert "bundle:support-triage@16" in result.output
    [item] = listed
    assert (item["key"], item["source"], item["record"]) == (letters[0], "outcomes",
                                                             UNKNOWN_BUNDLE)
    assert item["problems"] == [{"record": "outcomes.ndjson:2", "field": "bundle",
                                 "message": "unknown Bundle bundle:support-triage@16"}]
    assert item["at"]


def test_replay_writes_a_letter_once_its_cause_is_fixed(
    store: GraphStore, request: pytest.FixtureRequest, letters: list[str],
) -> None:
    register_v16(store)

    result = run_cli("deadletter", "replay", letters[0][:12], *cli_args(store, request))
    again = run_cli("deadletter", "replay", *cli_args(store, request))

    assert result.exit_code == 0, result.output
    assert "replayed 1 letter(s)" in result.output
    assert edges_of(store, "outcome:req-2") == {("SERVED_BY", "bundle:support-triage@16")}
    assert pending(store) == []
    assert "replayed 0 letter(s)" in again.output


def test_a_letter_still_failing_stays_pending_with_its_reason(
    store: GraphStore, letters: list[str],
) -> None:
    with client_for(store) as client:
        response = client.post("/api/v1/deadletter/replay", json={"keys": letters})
        everything = client.post("/api/v1/deadletter/replay")

    body = response.json()
    assert body["replayed"] == [] and body["unknown"] == []
    assert "unknown Bundle bundle:support-triage@16" in body["still_failing"][letters[0]]
    assert list(everything.json()["still_failing"]) == letters
    assert [letter.key for letter in pending(store)] == letters
    assert store.get(["outcome:req-2"]) == {}


def test_replaying_an_unknown_key_says_so(
    store: GraphStore, request: pytest.FixtureRequest, letters: list[str],
) -> None:
    result = run_cli("deadletter", "replay", "feedbeef", *cli_args(store, request))

    assert result.exit_code == 1
    assert "no pending letter with key feedbeef" in result.output
    assert [letter.key for letter in pending(store)] == letters


def test_a_letter_of_a_source_without_a_mapper_is_reported_not_lost(store: GraphStore) -> None:
    letter = dead_letter("carrier-pigeon", {"x": 1}, [Problem("lost", record=1)])
    store.upsert(records=[letter])

    with client_for(store) as client:
        body = client.post("/api/v1/deadletter/replay").json()
        listed = client.get("/api/v1/deadletter", params={"source": "carrier-pigeon"}).json()

    assert body["still_failing"] == {
        letter.key: "no mapper registered for source 'carrier-pigeon'"}
    assert [item["key"] for item in listed["items"]] == [letter.key]


def test_listing_pages_past_a_thousand_letters_and_skips_replayed_ones(
    store: GraphStore,
) -> None:
    letters = [dead_letter("outcomes", {"n": n}, [Problem("bad")]) for n in range(1005)]
    store.upsert(records=[*letters, Record(collection="deadletter.replayed",
                                           key=letters[0].key)])

    found = pending(store, limit=10_000)

    assert len(found) == 1004 and found[0].key == letters[1].key


def test_listing_pages_by_cursor_and_holds_at_most_8_mi_characters_a_page(
    store: GraphStore,
) -> None:
    # Three letters of ~3 Mi characters (rejected records can be as large as a body), two
    # small ones, one replayed.
    big = [dead_letter("outcomes", {"n": n, "blob": "x" * 3_000_000}, [Problem("bad")])
           for n in range(3)]
    small = [dead_letter("outcomes", {"n": n}, [Problem("bad")]) for n in (3, 4, 5)]
    store.upsert(records=[small[0], *big, small[1], small[2],
                          Record(collection="deadletter.replayed", key=small[1].key)])

    pages = []
    with client_for(store) as client:
        params: dict[str, str] = {"limit": "1000"}
        while True:
            body = client.get("/api/v1/deadletter", params=params).json()
            pages.append([item["record"]["n"] for item in body["items"]])
            if body["nextCursor"] is None:
                break
            params["cursor"] = body["nextCursor"]
        by_two = client.get("/api/v1/deadletter", params={"limit": "2"}).json()
        bad = client.get("/api/v1/deadletter", params={"cursor": "²"})

    assert pages == [[3, 0, 1], [2, 5]]  # 8 Mi characters fit two big letters, not three
    assert [item["record"]["n"] for item in by_two["items"]] == [3, 0]
    assert by_two["nextCursor"] is not None
    assert bad.status_code == 400 and bad.json()["problems"][0]["field"] == "cursor"


def test_the_cli_lists_a_page_and_names_the_command_for_the_next(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    letters = [dead_letter("outcomes", {"n": n}, [Problem(f"bad {n}")]) for n in range(3)]
    store.upsert(records=letters)

    first = run_cli("deadletter", "list", "--limit", "2", *cli_args(store, request))
    [after] = re.findall(r"deadletter list --after (\d+)", first.output)
    rest = run_cli("deadletter", "list", "--limit", "2", "--after", after,
                   *cli_args(store, request))

    assert first.exit_code == 0 and rest.exit_code == 0
    assert [k[:12] in first.output for k in (x.key for x in letters)] == [True, True, False]
    assert letters[2].key[:12] in rest.output and letters[0].key[:12] not in rest.output
    assert "--after" not in rest.output  # the last page


def test_the_command_the_cli_names_for_the_next_page_lists_it_as_printed(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Run as printed, with no setting in the environment: the page size and the store the
    # first page was read from must travel with the command (it named only --after, so the
    # next page was read from ./lineagegraph.db, 100 letters a page).
    letters = [dead_letter("outcomes", {"n": n}, [Problem(f"bad {n}")]) for n in range(5)]
    store.upsert(records=letters)
    store_flags = cli_args(store, request)
    monkeypatch.delenv("NEO4J_URI", raising=False)
    monkeypatch.delenv("LINEAGEGRAPH_DB", raising=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not where the embedded store's file is

    first = run_cli("deadletter", "list", "--limit", "2", "--source", "outcomes", *store_flags)
    [printed] = re.findall(r"more: lineagegraph (.+)", first.output)
    second = run_cli(*shlex.split(printed))

    assert first.exit_code == 0 and second.exit_code == 0
    assert [x.key[:12] in second.output for x in letters] == [False, False, True, True, False]
    assert "--after" in second.output  # one letter left: a third page


def test_replay_of_no_keys_replays_nothing(store: GraphStore) -> None:
    letters = [dead_letter("outcomes", {"n": n}, [Problem("bad")]) for n in range(2)]
    store.upsert(records=letters)

    with client_for(store) as client:
        body = client.post("/api/v1/deadletter/replay", json={"keys": []}).json()

    assert body == {"replayed": [], "still_failing": {}, "unknown": []}
    assert [letter.key for letter in pending(store)] == [x.key for x in letters]


def test_replay_maps_the_letters_pending_when_it_began_not_those_kept_meanwhile(
    store: GraphStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    mapped: list[int] = []

    def still_failing(record: dict[str, int], store: GraphStore) -> Batch:
        mapped.append(record["n"])
        if len(mapped) < 5:  # a steady inflow: each replay attempt brings another letter
            store.upsert(records=[dead_letter("inflow", {"n": 100 + len(mapped)},
                                              [Problem("bad")])])
        raise IngestError(Problem("still bad"))

    monkeypatch.setitem(deadletter.MAPPERS, "inflow", still_failing)
    # More letters than one read takes, so the replay reads on past the first page.
    unmapped = [dead_letter("carrier-pigeon", {"n": n}, [Problem("bad")]) for n in range(1000)]
    store.upsert(records=[dead_letter("inflow", {"n": 0}, [Problem("bad")]), *unmapped])

    result = deadletter.replay(store)

    assert mapped == [0]
    assert len(result.still_failing) == 1001 and len(pending(store, limit=2000)) == 1002


def test_a_small_page_of_one_source_reads_past_replayed_letters_in_few_statements(
    store: GraphStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    others = [dead_letter("outcomes", {"n": n}, [Problem("bad")]) for n in range(1500)]
    mine = dead_letter("openlineage", {"n": "mine"}, [Problem("bad")])
    store.upsert(records=[*others, mine])
    reads: list[int] = []
    real = store.record_sizes

    def counted(where: RecordFilter, limit: int) -> list[int]:
        reads.append(limit)
        return real(where, limit)

    monkeypatch.setattr(store, "record_sizes", counted)

    found, cursor = deadletter.pending_page(store, limit=1, source="openlineage")

    assert [letter.key for letter in found] == [mine.key] and cursor is None
    assert len(reads) <= 3  # pages of many letters, not one statement per letter skipped
