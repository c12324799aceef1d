"""`memsvc train skills`: the skill ablation, the controller's cross-validation and its artefact.

1. Collect (`evals.skills_data`): the development conversations written with every skill on every
   gated span; per (span, skill) pair what it wrote and cost; per question the fused candidates.
2. Ablation: recall within 500 words (WR@500) and ER@10 per category with no derived memory, with
   all, with the card triggers (the heuristic), without each skill and with each skill alone.
3. Cross-validation by conversation (k folds; a conversation never scores its own questions):
   the policy learns which pairs write a memory that brings a question's evidence into the budget
   (every pair's outcome is observed in the all-skills run: a full-information bandit, so the
   policy regresses each pair's reward). Its threshold is set on the training folds, then applied to
   the held-out fold, two ways: the best reward there, and the heuristic's cost there (equal cost).
   Reward = WR@500 - lambda * (cost / cost of every skill on every span).
4. The controller as shipped prunes the triggers (`mode: prune`): the card triggers propose pairs
   and the policy keeps those it rates at or above a threshold. The threshold is chosen on
   out-of-fold probabilities only (nested inside each fold of the cross-validation, over all folds
   for the shipped policy): the best reward among the thresholds whose recall within 500 words is at
   least the triggers' (`--rule no-loss`), or the best reward (`--rule reward`). Selecting among
   every pair (`mode: select`, thresholds chosen in-sample) stays in the report as the earlier design.
5. The shipped policy is trained on everything.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from tqdm import tqdm

from evals.cli import DEV_SUITE
from evals.datasets.base import default_data_root
from evals.skills_data import SkillsData, load_or_collect, score_selection, useful_memories
from evals.tasks import build_task
from evals.train_gates import train_app
from memsvc.learn import skills as P
from memsvc.learn.artefact import Manifest, checksums
from memsvc.learn.train import auroc, folds_by_group
from memsvc.models import Role
from memsvc.skills import SkillCard, load_skill_bank
from memsvc.skills.controller import slotted
from memsvc.skills.designer import DesignTable
from memsvc.skills.policy import pair_side
from memsvc.skills.types import Span

TRAIN_TASKS = ("locomo", "realtalk")
LAMBDA = 0.05  # WR@500 points (x100: 5) traded for the cost of running every skill on every span
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class PairSet:
    task: list[str]
    scene: list[str]
    span: list[str]
    skill: list[str]
    span_emb: np.ndarray
    skill_emb: np.ndarray
    side: np.ndarray
    label: np.ndarray
    cost: np.ndarray
    memories: list[list[str]]
    slotted: np.ndarray  # the card declares a slot the span fills (`memsvc.skills.controller.slotted`): never vetoed

    @property
    def groups(self) -> list[str]:
        return [f"{t}/{s}" for t, s in zip(self.task, self.scene, strict=True)]

    @property
    def trigger(self) -> np.ndarray:
        return self.side[:, -1] > 0.5


def bank_dir() -> Path:
    from storage.registry import SKILLS_DIR

    return SKILLS_DIR


def build_pairs(collected: Sequence[SkillsData], cards: Sequence[SkillCard], embed: Any) -> PairSet:
    selectable = {c.id: c for c in cards if c.selection == "controller"}
    vecs = dict(zip(selectable, embed([c.describe_text() for c in selectable.values()]), strict=True))
    cols: dict[str, list[Any]] = {k: [] for k in ("task", "scene", "span", "skill", "row", "emb", "side", "label", "cost", "mem",
                                                   "slotted")}
    for d in collected:
        useful: set[str] = set()
        for q in d.queries:
            useful |= useful_memories(q)
        for p in d.pairs:
            card = selectable.get(p.skill)
            row = d.spans.get((p.scene, p.span))
            if card is None or row is None:
                continue
            span = Span(p.span, Role(d.span_role[row]), d.span_text[row], _EPOCH)
            for k, v in (("task", d.task), ("scene", p.scene), ("span", p.span), ("skill", p.skill),
                         ("emb", d.span_emb[row]), ("side", pair_side(card, span)),
                         ("label", any(m in useful for m in p.memories)), ("cost", d.pair_cost(p)), ("mem", p.memories),
                         ("slotted", slotted(card, span))):
                cols[k].append(v)
    return PairSet(cols["task"], cols["scene"], cols["span"], cols["skill"], np.stack(cols["emb"]),
                   np.stack([vecs[s] for s in cols["skill"]]), np.stack(cols["side"]),
                   np.array(cols["label"], dtype=bool), np.array(cols["cost"], dtype=np.float64), cols["mem"],
                   np.array(cols["slotted"], dtype=bool))


def top_k_mask(pairs: PairSet, p: np.ndarray, threshold: float, k: int, subset: np.ndarray | None = None) -> np.ndarray:
    """Per span, the at most k best pairs whose probability reaches the threshold."""
    mask = np.zeros(len(p), dtype=bool)
    by_span: dict[tuple[str, str, str], list[int]] = {}
    for i in (np.flatnonzero(subset) if subset is not None else range(len(p))):
        if p[i] >= threshold:
            by_span.setdefault((pairs.task[i], pairs.scene[i], pairs.span[i]), []).append(int(i))
    for idx in by_span.values():
        for i in sorted(idx, key=lambda j: -p[j])[:k]:
            mask[i] = True
    return mask


def equal_cost_threshold(pairs: PairSet, p: np.ndarray, target: float, k: int, subset: np.ndarray) -> float:
    """The lowest threshold whose selection (within `subset`) costs no more than `target`."""
    for tau in np.linspace(0.02, 0.98, 49):
        if pairs.cost[top_k_mask(pairs, p, float(tau), k, subset)].sum() <= target:
            return float(tau)
    return 0.98


def reward_threshold(collected: Sequence[SkillsData], pairs: PairSet, p: np.ndarray, k: int, subset: np.ndarray,
                     turns: dict[str, int], cost_all: float) -> float:
    """The threshold whose selection (within `subset`: the training folds) has the best reward there."""
    scenes = set(np.array(pairs.groups)[subset])
    best = (-1e9, 0.5)
    for tau in (0.2, 0.35, 0.5, 0.65, 0.8, 0.9):
        m = evaluate(collected, pairs, top_k_mask(pairs, p, tau, k, subset), scenes, turns, cost_all, by_category=False)
        best = max(best, (m["reward"], tau))
    return best[1]


def evaluate(collected: Sequence[SkillsData], pairs: PairSet, mask: np.ndarray, scenes: set[str] | None,
             turns: dict[str, int], cost_all: float, *, by_category: bool = True) -> dict[str, Any]:
    keep = {m for i in np.flatnonzero(mask) for m in pairs.memories[i]}
    out = score_selection(collected, keep, scenes=scenes, by_category=by_category)
    groups = np.array(pairs.groups)
    in_scope = np.ones(len(mask), dtype=bool) if scenes is None else np.isin(groups, sorted(scenes))
    n_turns = sum(v for g, v in turns.items() if scenes is None or g in scenes)
    cost = float(pairs.cost[mask & in_scope].sum())
    out["pairs"] = int((mask & in_scope).sum())
    out["memories"] = len({m for i in np.flatnonzero(mask & in_scope) for m in pairs.memories[i]})
    out["cost_ms_per_turn"] = round(cost / max(1, n_turns), 3)
    out["cost_share"] = round(cost / cost_all, 4) if cost_all else 0.0
    out["reward"] = round(out["WR@500"] - LAMBDA * out["cost_share"], 4)
    return out


def ablation(collected: Sequence[SkillsData], pairs: PairSet, turns: dict[str, int], cost_all: float) -> dict[str, Any]:
    every = np.ones(len(pairs.label), dtype=bool)
    skills = np.array(pairs.skill)
    out: dict[str, Any] = {
        "none": evaluate(collected, pairs, ~every, None, turns, cost_all),
        "all": evaluate(collected, pairs, every, None, turns, cost_all),
        "heuristic": evaluate(collected, pairs, pairs.trigger, None, turns, cost_all),
    }
    for s in sorted(set(pairs.skill)):
        out[f"without {s}"] = evaluate(collected, pairs, skills != s, None, turns, cost_all)
        out[f"only {s}"] = evaluate(collected, pairs, skills == s, None, turns, cost_all)
    return out


PRUNE_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 0.9)
RULES = ("no-loss", "reward")
MIN_POSITIVES = 20  # pairs of a skill that brought evidence into the budget, for the policy to judge it


def judged_skills(pairs: PairSet, subset: np.ndarray | None = None) -> list[str]:
    """The skills the development data (`subset` of the pairs) can measure: at least `MIN_POSITIVES`
    positive pairs. The pruning policy leaves the others to their triggers (procedures, tool results
    and terminology never answer a question of these conversations: the policy would learn to veto
    them everywhere)."""
    skills = np.array(pairs.skill)
    labels = pairs.label if subset is None else pairs.label & subset
    return sorted(s for s in set(pairs.skill) if int((labels & (skills == s)).sum()) >= MIN_POSITIVES)


def prune_mask(pairs: PairSet, p: np.ndarray, threshold: float, k: int, subset: np.ndarray | None = None,
               judged: Sequence[str] | None = None) -> np.ndarray:
    """The pruning controller's selection (`memsvc.skills.policy.LearnedController`, mode `prune`):
    pairs whose card trigger matches and, for a judged skill on a pair that fills none of its card's
    slots, whose probability reaches the threshold (at most k such skills per span; threshold 0
    keeps every triggered pair)."""
    rated = pairs.trigger & ~pairs.slotted
    if judged is not None:
        rated &= np.isin(np.array(pairs.skill), list(judged))
    free = pairs.trigger & ~rated
    if subset is not None:
        free = free & subset
    return free | top_k_mask(pairs, np.where(rated, p, -1.0), threshold, k, subset)


def prune_threshold(collected: Sequence[SkillsData], pairs: PairSet, p: np.ndarray, k: int, subset: np.ndarray,
                    turns: dict[str, int], cost_all: float, rule: str, judged: Sequence[str]) -> float:
    """The pruning threshold chosen on `subset`'s out-of-fold probabilities `p`: the best reward
    there, with `no-loss` only among thresholds whose WR@500 there is at least the triggers' (0, the
    triggers themselves, when none is)."""
    scenes = set(np.array(pairs.groups)[subset])
    floor = evaluate(collected, pairs, pairs.trigger & subset, scenes, turns, cost_all, by_category=False)["WR@500"]
    best = (-1e9, 0.0)
    for tau in PRUNE_GRID:
        m = evaluate(collected, pairs, prune_mask(pairs, p, tau, k, subset, judged), scenes, turns, cost_all,
                     by_category=False)
        if rule == "reward" or m["WR@500"] >= floor:
            best = max(best, (m["reward"], tau))
    return best[1]


def out_of_fold(pairs: PairSet, folds: np.ndarray, subset: np.ndarray, steps: int) -> np.ndarray:
    """Probabilities for the pairs of `subset`, each from a policy trained on the other folds of
    `subset` only (zeros elsewhere)."""
    p = np.zeros(len(folds))
    for j in sorted(set(folds[subset].tolist())):
        train, held = subset & (folds != j), subset & (folds == j)
        if not train.any():
            continue
        model = P.fit_policy(pairs.span_emb[train], pairs.skill_emb[train], pairs.side[train], pairs.label[train], steps=steps)
        p[held] = P.predict_policy(model, pairs.span_emb[held], pairs.skill_emb[held], pairs.side[held])
    return p


def cross_validate(collected: Sequence[SkillsData], pairs: PairSet, k: int, top_k: int, steps: int,
                   turns: dict[str, int], cost_all: float, progress: bool, rule: str = "no-loss") -> dict[str, Any]:
    groups = pairs.groups
    folds = np.array(folds_by_group(groups, k))
    p_held = np.zeros(len(groups))
    taus: list[float] = []
    reward_taus: list[float] = []
    prune_taus: dict[str, list[float]] = {r: [] for r in RULES}
    learned = np.zeros(len(groups), dtype=bool)
    learned_reward = np.zeros(len(groups), dtype=bool)
    pruned = {r: np.zeros(len(groups), dtype=bool) for r in RULES}
    judged_by_fold: list[list[str]] = []
    for f in tqdm(range(k), desc="skill policy folds", disable=not progress):
        train, held = folds != f, folds == f
        if not held.any():
            continue
        model = P.fit_policy(pairs.span_emb[train], pairs.skill_emb[train], pairs.side[train], pairs.label[train], steps=steps)
        inner = out_of_fold(pairs, folds, train, steps)  # nested: the pruning threshold never sees fold f
        judged = judged_skills(pairs, train)
        judged_by_fold.append(judged)
        for rule in RULES:
            prune_taus[rule].append(prune_threshold(collected, pairs, inner, top_k, train, turns, cost_all, rule, judged))
        p_train = P.predict_policy(model, pairs.span_emb[train], pairs.skill_emb[train], pairs.side[train])
        full = np.zeros(len(groups))
        full[train] = p_train
        tau = equal_cost_threshold(pairs, full, float(pairs.cost[train & pairs.trigger].sum()), top_k, train)
        taus.append(tau)
        tau_r = reward_threshold(collected, pairs, full, top_k, train, turns, cost_all)
        reward_taus.append(tau_r)
        p_held[held] = P.predict_policy(model, pairs.span_emb[held], pairs.skill_emb[held], pairs.side[held])
        learned |= top_k_mask(pairs, p_held, tau, top_k, held)
        learned_reward |= top_k_mask(pairs, p_held, tau_r, top_k, held)
        for rule in RULES:
            pruned[rule] |= prune_mask(pairs, p_held, prune_taus[rule][-1], top_k, held, judged)
    every = np.ones(len(groups), dtype=bool)
    out = {
        "folds": k, "thresholds_equal_cost": [round(t, 3) for t in taus], "thresholds_reward": reward_taus,
        "thresholds_prune": prune_taus, "judged_by_fold": judged_by_fold,
        "pair_auroc": round(auroc(p_held, pairs.label.astype(int)), 4),
        "trigger_auroc": round(auroc(pairs.trigger.astype(float), pairs.label.astype(int)), 4),
        "positives": int(pairs.label.sum()), "pairs": len(groups),
        "systems": {
            "none": evaluate(collected, pairs, ~every, None, turns, cost_all),
            "all": evaluate(collected, pairs, every, None, turns, cost_all),
            "heuristic": evaluate(collected, pairs, pairs.trigger, None, turns, cost_all),
            "learned (equal cost)": evaluate(collected, pairs, learned, None, turns, cost_all),
            "learned (best reward)": evaluate(collected, pairs, learned_reward, None, turns, cost_all),
            **{f"learned, pruning ({rule})": evaluate(collected, pairs, pruned[rule], None, turns, cost_all)
               for rule in RULES},
        },
        "learned_curve": {f"tau={t}": evaluate(collected, pairs, top_k_mask(pairs, p_held, t, top_k), None, turns,
                                               cost_all, by_category=False) for t in (0.2, 0.35, 0.5, 0.65, 0.8)},
        "pruning_curve": {f"tau={t}": evaluate(collected, pairs, prune_mask(pairs, p_held, t, top_k, None, judged_skills(pairs)), None,
                                               turns, cost_all, by_category=False) for t in PRUNE_GRID},
    }
    out["p_held"] = p_held  # the out-of-fold probabilities (the shipped threshold is chosen on them; not saved)
    sel = pruned[rule]
    out["selection"] = {"precision": round(float(pairs.label[sel].mean()) if sel.any() else 0.0, 4),
                        "recall": round(float(sel[pairs.label].mean()) if pairs.label.any() else 0.0, 4),
                        "heuristic_precision": round(float(pairs.label[pairs.trigger].mean()), 4),
                        "heuristic_recall": round(float(pairs.trigger[pairs.label].mean()), 4)}
    return out


def design_table(collected: Sequence[SkillsData], pairs: PairSet) -> DesignTable:
    """The collection in the designer's neutral format (memsvc never imports evals)."""
    rows: dict[tuple[str, str, str], int] = {}
    role: list[str] = []
    text: list[str] = []
    key: list[str] = []
    by_task = {d.task: d for d in collected}
    span_rows = []
    for t, scene, span in zip(pairs.task, pairs.scene, pairs.span, strict=True):
        k = (t, scene, span)
        if k not in rows:
            d = by_task[t]
            r = d.spans[(scene, span)]
            rows[k] = len(role)
            role.append(d.span_role[r])
            text.append(d.span_text[r])
            key.append(f"{t}/{scene}|{span}")
        span_rows.append(rows[k])
    queries = [
        {"group": f"{d.task}/{q.scene}", "gold": list(q.gold), "ids": q.ids, "credited": [list(c) for c in q.credited],
         "words": q.words, "episodic": q.episodic, "sources": [list(x) for x in q.sources]}
        for d in collected for q in d.queries if d.main_categories is None or q.category in d.main_categories
    ]
    return DesignTable(
        pair_skill=list(pairs.skill), pair_span=span_rows, pair_label=[bool(x) for x in pairs.label],
        pair_cost=[float(x) for x in pairs.cost], pair_memories=pairs.memories, span_role=role, span_text=text,
        span_key=key, queries=queries, lam=LAMBDA, budget=500,
        source={"tasks": [d.task for d in collected], "queries": len(queries), "pairs": len(span_rows)},
    )


def _table(systems: dict[str, Any]) -> str:
    lines = ["| selection | WR@500 | ER@10 | memories | cost ms/turn | reward |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in systems.items():
        lines.append(f"| {name} | {100 * m['WR@500']:.1f} | {100 * m['ER@10']:.1f} | {m['memories']} | "
                     f"{m['cost_ms_per_turn']:.2f} | {100 * m['reward']:.1f} |")
    return "\n".join(lines)


def collect(names: Sequence[str], root: Path, cache: Path, progress: bool) -> list[SkillsData]:
    out = []
    for name in names:
        cap, scene_cap = DEV_SUITE.get(name, (None, None))
        task = build_task(name, root).select(cap, scene_cap)
        t0 = time.time()
        out.append(load_or_collect(task, cache, progress=progress))
        typer.echo(f"{name}: {len(task.queries)} queries, {task.n_docs} turns ({time.time() - t0:.0f} s)", err=True)
    return out


@train_app.command("skills")
def train_skills(
    data: Annotated[Path | None, typer.Option("--data", help="data root (default $MEMSVC_DATA or ../shared/data)")] = None,
    out: Annotated[Path, typer.Option("--out", help="artefact folder")] = P.PACKAGED,
    cache: Annotated[Path, typer.Option("--cache", help="collected runs (reused when present)")] = Path("eval-out/skills-cache"),
    tasks: Annotated[str, typer.Option("--tasks", help="comma-separated conversation tasks")] = ",".join(TRAIN_TASKS),
    folds: Annotated[int, typer.Option("--folds", min=2)] = 5,
    steps: Annotated[int, typer.Option("--steps", min=1)] = 400,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="skills per span")] = 3,
    rule: Annotated[str, typer.Option("--rule", help="how the pruning threshold is chosen: no-loss (the best reward "
                                      "that keeps the triggers' WR@500) or reward (the best reward)")] = "no-loss",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Ablate the skill bank, cross-validate the skill controller and write its artefact."""
    from memsvc.config import Settings
    from storage.registry import build_embedder

    if rule not in RULES:
        raise typer.BadParameter(f"--rule must be one of {', '.join(RULES)}")
    started = time.time()
    root = data or default_data_root()
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    collected = collect(names, root, cache, progress)
    cards = load_skill_bank(bank_dir())
    embedder = build_embedder(Settings())
    pairs = build_pairs(collected, cards, embedder.embed)
    turns = {f"{d.task}/{scene}": sum(1 for (s, _) in d.spans if s == scene) for d in collected
             for scene in {s for s, _ in d.spans}}
    cost_all = float(pairs.cost.sum())
    table_path = design_table(collected, pairs).save(cache / f"design-{'-'.join(names)}.json.gz")
    typer.echo(f"design table (for `memsvc skills design`): {table_path}", err=True)
    t0 = time.time()
    abl = ablation(collected, pairs, turns, cost_all)
    typer.echo("ablation (all development conversations):\n" + _table(abl), err=True)
    cv = cross_validate(collected, pairs, folds, top_k, steps, turns, cost_all, progress, rule)
    p_held = cv.pop("p_held")
    typer.echo("cross-validated by conversation:\n" + _table(cv["systems"]), err=True)
    typer.echo(json.dumps({k: v for k, v in cv.items() if k not in ("systems",)}), err=True)
    cv_s = time.time() - t0
    model = P.fit_policy(pairs.span_emb, pairs.skill_emb, pairs.side, pairs.label, steps=steps)
    everything = np.ones(len(p_held), dtype=bool)
    judged = judged_skills(pairs)
    tau = prune_threshold(collected, pairs, p_held, top_k, everything, turns, cost_all, rule, judged)
    shipped = cv["systems"][f"learned, pruning ({rule})"]
    files = [f for d in collected for f in d.files]
    manifest = Manifest(
        name=P.NAME, version=P.VERSION, created=datetime.now(UTC),
        command=shlex.join(["memsvc", *sys.argv[1:]]) if sys.argv else "memsvc train skills",
        data=checksums(files, root),
        config={"tasks": names, "folds": folds, "steps": steps, "top_k": top_k, "mode": "prune", "rule": rule,
                "judged": judged, "threshold": tau, "lambda": LAMBDA,
                "selections": {n: DEV_SUITE.get(n) for n in names},
                "cards": {c.id: c.version for c in cards if c.selection == "controller"},
                "memory_ms": {d.task: round(d.memory_ms, 3) for d in collected},
                "seconds": {"total": round(time.time() - started, 1), "cross_validate": round(cv_s, 1)}},
        metrics={"cv": cv, "ablation": abl,
                 "reward": {"learned": shipped["reward"],
                            "heuristic": cv["systems"]["heuristic"]["reward"], "all": cv["systems"]["all"]["reward"]}},
        heads={"policy": {"features": list(P.SIDE_FEATURES), "dim": int(pairs.span_emb.shape[1]), "hidden": 64}},
    )
    P.save(out, model, manifest)
    typer.echo(f"wrote {out} (threshold {tau:.2f}) in {time.time() - started:.0f} s", err=True)
