"""Prompt texts, one module per prompt, apart from the logic that fills and parses them.

Each module has a `VERSION` string stored with every row made from it; change the version whenever
the text changes, so old and new results are never mixed up.
"""
