"""Vector indexes: `edge.EdgeVectorIndex` (qdrant-edge, the default) and `qdrant.QdrantVectorIndex`."""
