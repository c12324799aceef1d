"""Pure retrieval functions: fusion, packing, presets, query analysis."""
