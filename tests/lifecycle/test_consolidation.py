"""Consolidation through the real job runner and stores: digests cite exactly the turns they state,
near-duplicates merge into one canonical memory, the profile follows supersession; every job is
idempotent; the structured presets recall through episodes and neighbours."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from memsvc.learn.features import RERANK_FEATURES
from memsvc.lifecycle.consolidate import DIGEST_JOB, MERGE_JOB, PROFILE_JOB, SWEEP_JOB
from memsvc.memory_os import MemoryOS
from memsvc.models import (
    DIGEST_KEY,
    EPISODE_KEY,
    MERGED_KEY,
    PROFILE_KEY,
    TURN_KEY,
    JobState,
    MemoryStatus,
    MemoryType,
)
from memsvc.ports import MemoryQuery
from memsvc.schemas import MemoryPatch, MessageIn, SearchRequest, WriteRequest

T0 = datetime(2023, 5, 8, 13, 0, tzinfo=UTC)
HIKE = ["We planned a hiking trip to the Alps in June.", "The Alps hike takes three days.",
        "We booked mountain huts for the Alps hike.", "I need new hiking boots for the Alps.",
        "My sister joins the Alps hiking trip too.", "The Alps hike starts in Chamonix."]
CAT = ["I adopted a cat named Miso.", "Miso sleeps on my keyboard.", "Miso chases her tail all day.",
       "I bought Miso a scratching post.", "Miso loves tuna.", "The vet says Miso is healthy."]


def write(os_: MemoryOS, texts: list[str], start: int, when: datetime, session: str, user: str = "ann") -> None:
    os_.add("t", WriteRequest(user_id=user, session_id=session, messages=[
        MessageIn(id=f"m{start + i}", role="user", name="Ann", content=c, timestamp=when + timedelta(minutes=i))
        for i, c in enumerate(texts)]))


def memories(os_: MemoryOS, user: str = "ann", status: MemoryStatus | None = MemoryStatus.ACTIVE) -> list:  # type: ignore[type-arg]
    return os_.records.list_memories("t", MemoryQuery(user_id=user, statuses=[status] if status else None, limit=500)).items


def test_closing_an_episode_digests_it_with_exactly_the_turns_it_states(memory_os: MemoryOS) -> None:
    write(memory_os, HIKE, 0, T0, "s1")
    write(memory_os, HIKE[:0] + ["Let me tell you about my cat."], 6, T0 + timedelta(days=3), "s2")  # closes episode 0
    assert memory_os.jobs.wait_idle(60, kind=DIGEST_JOB)
    episodes = memory_os.records.episodes("t", "ann")
    assert [(e.episode, e.turns, e.boundary, e.digest_turns) for e in episodes] == [(0, 6, "session", 6), (1, 1, None, 0)]
    (digest,) = [c for c in memories(memory_os) if c.metadata.get(DIGEST_KEY)]
    assert digest.id == episodes[0].digest_id and digest.metadata[EPISODE_KEY] == 0
    assert digest.written_by == "episode-digest" and digest.type is MemoryType.SEMANTIC
    said = {f"m{i}": f"Ann: {t}" for i, t in enumerate(HIKE)}
    assert digest.source_ids and set(digest.source_ids) <= set(said)
    for sid in digest.source_ids:  # every source is quoted, and every quote has its source
        assert said[sid] in digest.content
    assert sum(line in digest.content for line in said.values()) == len(digest.source_ids)
    # idempotent: running the job again digests nothing and writes nothing (counted once the merge
    # and profile jobs the digest queued are done: a profile written between the counts is theirs)
    assert all(memory_os.jobs.wait_idle(60, kind=k) for k in (MERGE_JOB, PROFILE_JOB))
    before = len(memories(memory_os, status=None))
    assert memory_os.lifecycle.digest_scope("t", "ann") == {"digests": 0, "noops": 0}
    assert len(memories(memory_os, status=None)) == before
    turns = memory_os.records.episode_turns("t", "ann", [0])
    assert [c.metadata[TURN_KEY] for c in turns] == list(range(6))


def test_a_grown_episode_gets_a_new_digest_that_supersedes_the_old(memory_os: MemoryOS) -> None:
    write(memory_os, HIKE, 0, T0, "s1")
    memory_os.lifecycle.settle("t")
    (first,) = [c for c in memories(memory_os) if c.metadata.get(DIGEST_KEY)]
    write(memory_os, ["The Alps hike needs a good map of Chamonix.", "We will hike the Alps from hut to hut."],
          6, T0 + timedelta(minutes=6), "s1")
    assert memory_os.jobs.wait_idle(60, kind=DIGEST_JOB)  # a digest of what the write closed, if it closed one
    version = memory_os.records.scope_version("t", "ann")
    memory_os.lifecycle.digest_scope("t", "ann", idle=True)
    assert memory_os.records.scope_version("t", "ann") == version  # a digest never makes a write plan again
    memory_os.lifecycle.settle("t")
    (second,) = [c for c in memories(memory_os) if c.metadata.get(DIGEST_KEY) and c.metadata[EPISODE_KEY] == 0]
    assert second.id != first.id
    old = memory_os.get("t", first.id)
    assert (old.status, old.superseded_by) == (MemoryStatus.SUPERSEDED, second.id)
    episodes = memory_os.records.episodes("t", "ann")  # surprise may have cut the second new turn off
    assert episodes[0].turns >= 7 and all(e.digest_turns == e.turns for e in episodes)


def test_near_duplicates_merge_into_the_oldest_with_sources_unioned(memory_os: MemoryOS) -> None:
    write(memory_os, ["I moved to Berlin in May 2023."], 0, T0, "s1")
    write(memory_os, ["I moved to Berlin in May 2023!"], 1, T0 + timedelta(days=30), "s2")
    facts = [c for c in memories(memory_os) if c.type is not MemoryType.EPISODIC and "Berlin" in c.content]
    if len(facts) < 2:  # the write path dropped the repeat already: nothing for the job to merge
        assert memory_os.lifecycle.merge_scope("t", "ann")["merged"] == 0
        return
    result = memory_os.lifecycle.merge_scope("t", "ann")
    assert result["merged"] >= 1
    canonical = min(facts, key=lambda c: (c.created_at, c.id))
    merged = memory_os.get("t", canonical.id)
    assert set(merged.source_ids) == {s for c in facts for s in c.source_ids}
    assert set(merged.metadata[MERGED_KEY]) == {c.id for c in facts} - {canonical.id}
    for c in facts:
        if c.id != canonical.id:
            assert memory_os.get("t", c.id).superseded_by == canonical.id
    assert [v.change.value for v in memory_os.history("t", canonical.id)][-1] == "update"
    again = memory_os.lifecycle.merge_scope("t", "ann")
    assert (again["merged"], again["groups"]) == (0, 0)


F_BERLIN, F_JAZZ, F_CAT, F_CAT2 = (f"00000000-0000-4000-8000-{i:012d}" for i in range(1, 5))


def fact(memory_id: str, content: str, at: datetime) -> dict:  # type: ignore[type-arg]
    """A semantic memory as `memsvc export` writes it (what `import_records` reads)."""
    return {"kind": "memory", "id": memory_id, "user_id": "ann", "type": "semantic", "content": content,
            "source_ids": [], "created_at": at.isoformat(), "updated_at": at.isoformat(), "importance": 0.5,
            "version": 1, "status": "active", "metadata": {}, "access_count": 0}


def test_merging_compares_what_changed_since_its_mark_against_the_whole_scope(memory_os: MemoryOS) -> None:
    """After a run, only memories changed since its mark are compared; an old memory that a changed
    one now duplicates is found through the vector index and merged with it."""
    memory_os.import_records("t", [fact(F_BERLIN, "I moved to Berlin in May 2023.", T0),
                                   fact(F_JAZZ, "I love listening to jazz on Sundays.", T0 + timedelta(hours=1)),
                                   fact(F_CAT, "My cat Miso sleeps on the keyboard.", T0 + timedelta(hours=2))])
    first = memory_os.lifecycle.merge_scope("t", "ann")
    assert (first["merged"], first["compared"]) == (0, 3)  # no mark yet: the whole scope
    mark = memory_os.records.merge_mark("t", "ann")
    assert mark is not None and mark > datetime.now(UTC) - timedelta(minutes=1)  # when it ran
    again = memory_os.lifecycle.merge_scope("t", "ann")
    assert (again["merged"], again["compared"]) == (0, 0)  # the imported facts are older than the mark
    # the jazz fact is edited into a near-duplicate of the Berlin fact: only it has changed
    memory_os.update("t", F_JAZZ, MemoryPatch(content="I moved to Berlin in May 2023!"))
    merged = memory_os.lifecycle.merge_scope("t", "ann")
    assert (merged["merged"], merged["groups"], merged["compared"]) == (1, 1, 1)
    assert memory_os.get("t", F_JAZZ).superseded_by == F_BERLIN  # the older one is canonical
    assert memory_os.get("t", F_BERLIN).metadata[MERGED_KEY] == [F_JAZZ]
    later = memory_os.records.merge_mark("t", "ann")
    assert later is not None and later > mark  # moved by the merging commit
    assert memory_os.lifecycle.merge_scope("t", "ann")["compared"] == 0  # the merge's own update is not a change
    assert memory_os.lifecycle.merge_scope("t", "ann", full=True)["merged"] == 0
    # an import may bring older memories: it clears the mark, so the next run compares the whole scope
    memory_os.import_records("t", [fact(F_CAT2, "My cat Miso sleeps on the keyboard!", T0 - timedelta(days=1))])
    assert memory_os.records.merge_mark("t", "ann") is None
    last = memory_os.lifecycle.merge_scope("t", "ann")
    assert last["merged"] == 1 and memory_os.get("t", F_CAT).superseded_by == F_CAT2


def test_the_profile_follows_supersession_and_is_rebuilt_only_on_change(memory_os: MemoryOS) -> None:
    write(memory_os, ["I live in Paris.", "I love jazz music."], 0, T0, "s1")
    first = memory_os.lifecycle.profile_scope("t", "ann")
    assert first["changed"] is True
    profile = memory_os.get("t", first["profile"])
    assert profile.type is MemoryType.REFINED and profile.metadata[PROFILE_KEY] is True
    assert "Paris" in profile.content and "jazz" in profile.content
    assert memory_os.lifecycle.profile_scope("t", "ann") == {"profile": profile.id, "changed": False}
    write(memory_os, ["I live in Berlin."], 2, T0 + timedelta(days=60), "s2")  # supersedes Paris
    second = memory_os.lifecycle.profile_scope("t", "ann")
    new = memory_os.get("t", second["profile"])
    assert "Berlin" in new.content and "Paris" not in new.content and "jazz" in new.content
    old = memory_os.get("t", profile.id)
    assert (old.status, old.superseded_by) == (MemoryStatus.SUPERSEDED, new.id)
    assert "m2" in new.source_ids and "m0" not in new.source_ids


def test_the_profile_reads_the_top_facts_and_reads_on_while_wordings_repeat(memory_os: MemoryOS) -> None:
    """The job reads the most important facts, a few times the profile's size; when the top ones
    repeat one wording it reads further, so the profile still lists `profile_max_facts` facts."""
    memory_os.lifecycle.config.profile_max_facts = 2

    def pref(i: int, content: str, importance: float) -> dict:  # type: ignore[type-arg]
        return {**fact(f"00000000-0000-4000-9000-{i:012d}", content, T0 + timedelta(minutes=i)),
                "importance": importance, "written_by": "capture-preferences"}

    memory_os.import_records("t", [pref(i, "I love jazz.", 0.9) for i in range(12)]
                             + [pref(20, "I live in Paris.", 0.8), pref(21, "I like tea.", 0.7),
                                pref(22, "I play chess.", 0.1), {**pref(23, "I hate noise.", 0.95), "written_by": "other"}])
    out = memory_os.lifecycle.profile_scope("t", "ann")
    profile = memory_os.get("t", out["profile"])
    assert profile.content == "I love jazz.\nI live in Paris."
    assert out["facts"] == 2 and memory_os.lifecycle.profile_scope("t", "ann")["changed"] is False


def test_jobs_run_on_the_runner_and_the_structured_presets_recall_through_episodes(memory_os: MemoryOS) -> None:
    write(memory_os, HIKE, 0, T0, "s1")
    write(memory_os, CAT, 6, T0 + timedelta(days=2), "s2")
    memory_os.lifecycle.settle("t")
    states = {(j.kind, j.state) for j in memory_os.records.recent_jobs(kinds=[DIGEST_JOB, MERGE_JOB, PROFILE_JOB])}
    assert {(DIGEST_JOB, JobState.DONE), (MERGE_JOB, JobState.DONE), (PROFILE_JOB, JobState.DONE)} <= states
    q = "Who joins the hiking trip?"
    two_level = memory_os.search("t", SearchRequest(user_id="ann", query=q, preset="hybrid_episodes", explain=True))
    assert any("episodes" in r["why"]["retrievers"] for r in two_level.results)
    assert {r["id"] for r in two_level.results if "episodes" in r["why"]["retrievers"]} <= {
        c.id for c in memory_os.records.episode_turns("t", "ann", [0])}
    near = memory_os.search("t", SearchRequest(user_id="ann", query=q, preset="hybrid_neighbours", explain=True))
    assert any("neighbours" in r["why"]["retrievers"] for r in near.results)
    # "last May" is read against the scope's latest message (May 2023), not the wall clock
    def window(query: str) -> tuple[datetime, datetime] | None:
        return memory_os.reader._window("t", SearchRequest(user_id="ann", query=query))

    assert window("What did Ann do in May 2023?") == (datetime(2023, 5, 1, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC))
    assert window("Who joins the hiking trip?") is None
    temporal = memory_os.search("t", SearchRequest(user_id="ann", query="What did Ann do in May 2023?",
                                                   preset="hybrid_temporal", explain=True))
    assert any("temporal" in r["why"]["retrievers"] for r in temporal.results)
    # the read gate sees the named period: which candidates the `temporal` ranking brought up
    col = {name: i for i, name in enumerate(RERANK_FEATURES)}
    for query, named in (("What did Ann do in May 2023?", True), ("Who joins the hiking trip?", False)):
        cset = memory_os.reader.candidates("t", SearchRequest(user_id="ann", query=query, preset="hybrid_temporal"),
                                           features=True)
        assert cset is not None and cset.features is not None
        in_period = np.array(["temporal" in c.fused.ranks for c in cset.candidates])
        assert (cset.features[:, col["q_window"]] == float(named)).all()
        assert (cset.features[:, col["temporal_missing"]] == (named & ~in_period)).all()
        assert in_period.any() == named


@pytest.mark.anyio
async def test_metrics_export_statuses_jobs_per_kind_and_run_times(memory_os: MemoryOS) -> None:
    import httpx

    from api.app import create_app

    write(memory_os, HIKE, 0, T0, "s1")
    memory_os.lifecycle.settle("t")
    memory_os.delete("t", memories(memory_os)[0].id)
    app = create_app(memory_os.settings, memory_os=memory_os)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        text = (await c.get("/metrics")).text
    counts = memory_os.records.status_counts()
    for status, n in counts.items():
        assert f'memsvc_memories{{status="{status}"}} {float(n)}' in text
    assert counts["deleted"] == 1
    assert f'memsvc_jobs{{kind="{DIGEST_JOB}",state="done"}}' in text
    assert f'memsvc_job_runs{{kind="{DIGEST_JOB}",outcome="done"}}' in text
    assert f'memsvc_job_run_seconds{{kind="{DIGEST_JOB}"}}' in text


def test_two_runs_digesting_at_once_commit_one_digest_per_episode(memory_os: MemoryOS) -> None:
    import threading

    write(memory_os, HIKE, 0, T0, "s1")
    write(memory_os, CAT, 6, T0 + timedelta(days=2), "s2")
    assert memory_os.jobs.wait_idle(60, kind=DIGEST_JOB)
    results: list[dict] = []  # type: ignore[type-arg]
    runs = [threading.Thread(target=lambda: results.append(memory_os.lifecycle.digest_scope("t", "ann", idle=True)))
            for _ in range(3)]
    for th in runs:
        th.start()
    for th in runs:
        th.join()
    digests = [c for c in memories(memory_os, status=None) if c.metadata.get(DIGEST_KEY)]
    by_episode = sorted(c.metadata[EPISODE_KEY] for c in digests if c.status is MemoryStatus.ACTIVE)
    assert by_episode == sorted({e.episode for e in memory_os.records.episodes("t", "ann") if e.digest_id})
    assert len(digests) == len(by_episode) == len(set(by_episode)) >= 1  # no duplicate, nothing superseded
    assert sum(r["digests"] for r in results) <= len(by_episode)


def test_the_scheduled_sweep_digests_an_idle_episode_without_being_asked(sweeping_os: MemoryOS) -> None:
    """No write closes the episode and nothing calls `settle`: the periodic `lifecycle.sweep` job
    finds the open, idle episode and queues its digest, whose merge and profile jobs follow."""
    write(sweeping_os, HIKE, 0, T0, "s1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not sweeping_os.records.episodes("t", "ann")[0].digest_id:
        time.sleep(0.1)
    (episode,) = sweeping_os.records.episodes("t", "ann")
    assert episode.closed_at is None and episode.digest_turns == 6 and episode.digest_id
    assert sweeping_os.jobs.wait_idle(60, kind=DIGEST_JOB)  # the job row is marked done after its commit
    for kind in (SWEEP_JOB, DIGEST_JOB):
        assert JobState.DONE in {j.state for j in sweeping_os.records.recent_jobs(kinds=[kind])}
    for kind in (MERGE_JOB, PROFILE_JOB):
        assert sweeping_os.jobs.wait_idle(60, kind=kind)
    assert [c for c in memories(sweeping_os) if c.metadata.get(PROFILE_KEY)]
