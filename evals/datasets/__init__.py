"""Dataset loaders: one module per benchmark family, each returning typed records (`base.Dataset`).

locomo, realtalk, tmd, longmemeval: conversations (sessions of dated turns with ids and speakers)
and questions with evidence ids and a category. knowmebench, procedural (Proced_mem_bench, ReMe,
Gorilla, ToolBench), hipporag (MuSiQue, HotpotQA): a corpus per scene and questions.
"""
