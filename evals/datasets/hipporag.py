"""HippoRAG's multi-hop samples (OSU-NLP-Group/HippoRAG, legacy): MuSiQue and HotpotQA train sets of 100.

A semantic-memory stand-in: one shared passage corpus per dataset, queries need 2-4 passages.
"""

from __future__ import annotations

import json
from pathlib import Path

from evals.datasets.base import Dataset, Document, Question, answer_text


def load_musique(root: Path) -> Dataset:
    qfile, cfile = root / "hipporag" / "musique_train.json", root / "hipporag" / "musique_train_corpus.json"
    passages = json.loads(cfile.read_text(encoding="utf-8"))
    corpus = tuple(Document(id=str(i), title=p["title"], text=p["text"]) for i, p in enumerate(passages))
    index = {(p["title"], p["text"]): str(i) for i, p in enumerate(passages)}
    questions = []
    for q in json.loads(qfile.read_text(encoding="utf-8")):
        support = [index[(p["title"], p["paragraph_text"])] for p in q["paragraphs"] if p["is_supporting"]]
        questions.append(
            Question(
                id=q["id"],
                scene="all",
                text=q["question"],
                category=q["id"].split("__")[0][:4],
                evidence=tuple(dict.fromkeys(support)),
                answer=answer_text(q["answer"]),
                meta={"aliases": q.get("answer_aliases", [])},
            )
        )
    return Dataset(name="musique", corpus={"all": corpus}, questions=tuple(questions), files=(qfile, cfile),
                   notes=("supporting paragraphs mapped to the corpus by (title, text)",))


def load_hotpotqa(root: Path) -> Dataset:
    qfile, cfile = root / "hipporag" / "hotpotqa_train.json", root / "hipporag" / "hotpotqa_train_corpus.json"
    passages = json.loads(cfile.read_text(encoding="utf-8"))
    corpus = tuple(
        Document(id=title, title=title, text="".join(sentences).strip()) for title, sentences in passages.items()
    )
    questions = tuple(
        Question(
            id=q["_id"],
            scene="all",
            text=q["question"],
            category=q["type"],
            evidence=tuple(dict.fromkeys(title for title, _ in q["supporting_facts"])),
            answer=answer_text(q["answer"]),
            meta={"level": q.get("level")},
        )
        for q in json.loads(qfile.read_text(encoding="utf-8"))
    )
    return Dataset(name="hotpotqa", corpus={"all": corpus}, questions=questions, files=(qfile, cfile),
                   notes=("documents = passages (title + sentences); qrels = supporting titles",))
