"""The memory lifecycle: episodes (segmentation by session, time gap and surprise), the
consolidation jobs that digest episodes, merge near-duplicates and keep a profile per user, and
retention under per-scope budgets (score, archive, restore)."""
