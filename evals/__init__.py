"""Evaluation suite: dataset loaders, LMEB-style tasks, metrics, baselines, runners and reports.

Uses `memsvc` only through its public interface (`MemoryClient`: in-process `MemoryOS` or REST).
"""
