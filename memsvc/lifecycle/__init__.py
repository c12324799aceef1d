"""Memory lifecycle: retention under per-scope budgets (score, archive, restore)."""
