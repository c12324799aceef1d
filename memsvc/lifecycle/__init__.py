"""The memory lifecycle: episodes (segmentation by session, time gap and surprise), and the
consolidation jobs that digest episodes, merge near-duplicates and keep a profile per user."""
