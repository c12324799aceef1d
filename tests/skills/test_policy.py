"""The learned skill controller as shipped: the packaged artefact loads with its manifest, scores
(span, skill) pairs and keeps at most top_k skills above its threshold per span; in the shipped
`prune` mode only among the skills whose card trigger matches."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memsvc.config import Settings, SkillsConfig
from memsvc.learn import skills as P
from memsvc.models import Role
from memsvc.skills import load_skill_bank
from memsvc.skills.controller import TriggerController, slotted, triggered
from memsvc.skills.policy import LearnedController
from memsvc.skills.types import Span
from storage.registry import SKILLS_DIR, build_embedder, build_skill_controller

MONDAY = datetime(2023, 5, 8, tzinfo=UTC)


def test_the_packaged_policy_chooses_per_span_within_its_cards() -> None:
    settings = Settings(skills=SkillsConfig(controller="learned", top_k=2))
    embedder = build_embedder(settings)
    controller = build_skill_controller(settings, embedder)
    assert isinstance(controller, LearnedController)
    manifest = json.loads((P.PACKAGED / "manifest.json").read_text())
    assert controller.threshold == manifest["config"]["threshold"]
    assert controller.describe()["metrics"]["reward"] == manifest["metrics"]["reward"]
    cards = [c for c in load_skill_bank(SKILLS_DIR) if c.selection == "controller" and c.executor == "offline"]
    turns = [("Caroline", "I went to a support group yesterday and it was so powerful.", Role.USER),
             ("Melanie", "Haha, that's so funny!", Role.USER),
             (None, "1. Open Settings\n2. Tap Wi-Fi", Role.ASSISTANT)]
    spans = [Span(f"m{i}", role, text, MONDAY, name=name) for i, (name, text, role) in enumerate(turns)]
    vecs = embedder.embed([f"{n or 'assistant'}: {t}" for n, t, _ in turns])
    picks = controller.select(spans, vecs, cards)
    assert "capture-events" in picks[0] and picks[1] == []
    assert all(len(p) <= 2 for p in picks)
    allowed = {c.id for c in cards if "assistant" in c.roles}
    assert set(picks[2]) <= allowed
    scores = controller.scores(spans, vecs, cards)
    assert [len(s) for s in scores] == [len([c for c in cards if s.role.value in c.roles]) for s in spans]


def test_an_artefact_for_other_features_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "policy"
    shutil.copytree(P.PACKAGED, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["heads"]["policy"]["features"] = ["words"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    settings = Settings(skills=SkillsConfig(controller="learned", policy_path=folder))
    with pytest.raises(ValueError, match="other features"):
        build_skill_controller(settings, build_embedder(settings))
    assert isinstance(build_skill_controller(Settings(), build_embedder(settings)), LearnedController)  # the default


def test_an_artefact_of_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "policy"
    shutil.copytree(P.PACKAGED, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["mode"] = "veto-everything"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    settings = Settings(skills=SkillsConfig(controller="learned", policy_path=folder))
    with pytest.raises(ValueError, match="unknown controller mode"):
        build_skill_controller(settings, build_embedder(settings))


TURNS = [
    ("Caroline", "I went to a support group yesterday and it was so powerful.", Role.USER),
    ("Melanie", "I'm planning to take the kids camping next month, we love hiking.", Role.USER),
    ("Caroline", "My sister Anna lives in Berlin and I love painting sunsets.", Role.USER),
    ("Melanie", "Haha, that's so funny!", Role.USER),
    (None, "1. Open Settings\n2. Tap Wi-Fi\n3. Choose the network", Role.ASSISTANT),
    ("Melanie", "Caroline moved to Munich last month.", Role.USER),
]


def test_the_shipped_policy_only_vetoes_what_the_triggers_propose() -> None:
    settings = Settings(skills=SkillsConfig(controller="learned"))
    embedder = build_embedder(settings)
    controller = build_skill_controller(settings, embedder)
    assert isinstance(controller, LearnedController)
    assert controller.mode == "prune" and controller.describe()["mode"] == "prune"
    cards = [c for c in load_skill_bank(SKILLS_DIR) if c.selection == "controller" and c.executor == "offline"]
    by_id = {c.id: c for c in cards}
    spans = [Span(f"m{i}", role, text, MONDAY, name=name) for i, (name, text, role) in enumerate(TURNS)]
    vecs = embedder.embed([f"{n or 'assistant'}: {t}" for n, t, _ in TURNS])
    heuristic = TriggerController().select(spans, vecs, cards)
    picks = controller.select(spans, vecs, cards)
    for span, pick, proposed, scored in zip(spans, picks, heuristic, controller.scores(spans, vecs, cards), strict=True):
        assert set(pick) <= set(proposed)  # never a skill whose trigger did not match
        assert all(triggered(by_id[s], span) for s in pick)
        # skills the data could not measure, and statements filling a slot, run on their trigger
        free = [s for s in proposed if not controller.judges(s) or slotted(by_id[s], span)]
        kept = sorted((x for x in scored if x[0] in proposed and x[0] not in free and x[1] >= controller.threshold),
                      key=lambda x: -x[1])
        assert pick == sorted([*free, *(s for s, _ in kept[: controller.top_k])])
    assert "capture-events" in picks[0] and picks[3] == []
    assert controller.judged is not None and "capture-events" in controller.judged
    assert "capture-procedures" not in controller.judged and "capture-procedures" in picks[4]  # the assistant's steps
    # a statement that fills a slot of its card (a named subject's new residence) is never vetoed
    assert slotted(by_id["capture-personal-facts"], spans[5]) and "capture-personal-facts" in picks[5]
    assert not slotted(by_id["capture-personal-facts"], spans[0])

    # At threshold 0 the pruning controller is the triggers (capped at top_k); selecting among every
    # skill the role allows is what the `select` mode does, and it goes beyond the triggers.
    loose = LearnedController(controller.model, controller.manifest, embedder.embed, top_k=10, threshold=0.0)
    assert loose.select(spans, vecs, cards) == [sorted(p) for p in heuristic]
    loose.mode = "select"
    wider = loose.select(spans, vecs, cards)
    assert any(set(w) > set(h) for w, h in zip(wider, heuristic, strict=True))
