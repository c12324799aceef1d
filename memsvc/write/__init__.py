"""Write path stages (ARCHITECTURE.md §2): normalise, segment, gate, extract, resolve, commit."""
