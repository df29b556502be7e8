"""Saved circuits (`saved`), LLM-proposed pruning (`llm_pruning`, prompts in `llm_prompts`) and the
comparison of pruning methods (`pruning_comparison`)."""
