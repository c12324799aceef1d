"""The knowledge graph: extraction (spaCy), deterministic ids, personalized PageRank.

Pure functions and small value types; the stores live in `storage.graph`.
"""

from memsvc.graph.ids import entity_id, normalize_name, relation_id
from memsvc.graph.matrix import build_adjacency, build_mentions
from memsvc.graph.ppr import (
    DEFAULT_DAMPING,
    entity_seeds_from_memories,
    joint_adjacency,
    memory_scores,
    mention_counts,
    node_specificity,
    path_to,
    personalized_pagerank,
    rank_memories,
    rank_memories_joint,
    seed_paths,
)
from memsvc.graph.temporal import FAMILIES, predicate_family, supersede, valid_at

__all__ = [
    "DEFAULT_DAMPING",
    "FAMILIES",
    "build_adjacency",
    "build_mentions",
    "entity_id",
    "entity_seeds_from_memories",
    "joint_adjacency",
    "memory_scores",
    "mention_counts",
    "node_specificity",
    "normalize_name",
    "path_to",
    "personalized_pagerank",
    "predicate_family",
    "rank_memories",
    "rank_memories_joint",
    "relation_id",
    "seed_paths",
    "supersede",
    "valid_at",
]
