"""Prompt texts for LLM circuit pruning, annotation and summary (kept apart from the logic in `core.circuits.llm_pruning`).

Bump `PROMPT_VERSION` whenever a text below changes: it is stored with every pruned circuit version
and is part of the response-cache key, so old replies are never reused for a new prompt.
Placeholders are filled with `str.format`; literal braces are doubled.
"""

from __future__ import annotations

PROMPT_VERSION = "circuit-prune-v1"

SYSTEM = """You are an expert in mechanistic interpretability of transformer language models.
You are shown an attribution graph traced from a small GPT-2-style model with sparse dictionaries:
attention-output SAE latents ("attn"), MLP transcoder latents ("transcoder"), reconstruction-error
nodes ("attn_error", "mlp_error"), token and position embeddings ("embed", "pos_embed") and the
traced output ("logit"). An edge A -> B with weight w means A's direct effect on B is w (positive
excites, negative inhibits). Each latent comes with a short natural-language explanation of when it
fires (it may be a weak automatic baseline; judge it, do not trust it blindly).

Your job: prune the graph to the nodes that implement the behaviour described by the task, give each
kept node a one-line role, and summarise the algorithm. Reply with ONE JSON object and nothing else."""

# The reply schema, shown to the model verbatim.
SCHEMA = """{
  "keep": [{"id": "<node id from the list>", "role": "<one line: what this node does for the task>"}, ...],
  "drop": ["<node id from the list>", ...],
  "summary": "<2-5 sentences: the algorithm the kept nodes implement>"
}"""

RULES = """Rules:
- Use only node ids exactly as listed under NODES. Do not invent ids.
- Every listed node must appear exactly once: either in "keep" or in "drop".
- Never drop the target node ({target_id}); it is always part of the circuit.
- A role is one line (no line breaks), at most 200 characters.
- Output only the JSON object: no prose before or after it."""

# One prompt for the whole graph.
USER_SINGLE = """TASK
{task}

TARGET
{target_id}: {target_label}

NODES ({n_nodes}; format: id | kind | layer | position 'token' | activation | influence on target | explanation)
{node_lines}

EDGES (strongest {n_edges} of {n_edges_total}; source -> target: weight)
{edge_lines}

Reply with JSON of exactly this shape:
{schema}

{rules}"""

# One prompt for one part of a graph too large for a single prompt (hierarchical pruning).
USER_PART = """TASK
{task}

TARGET
{target_id}: {target_label}

This graph is too large for one prompt, so it is pruned {mode}, starting next to the output.
This is part {part}: {part_label}.

ALREADY KEPT DOWNSTREAM (decided in earlier parts; not to be listed again)
{kept_lines}

NODES OF THIS PART ({n_nodes}; format: id | kind | layer | position 'token' | activation | influence on target | explanation)
{node_lines}

EDGES FROM THIS PART (strongest {n_edges} of {n_edges_total}; source -> target: weight; edges into dropped nodes are not shown)
{edge_lines}

Decide only about the nodes of this part. In "summary", say in one or two sentences what this part contributes.

Reply with JSON of exactly this shape:
{schema}

{rules}"""

# The closing call of a hierarchical pruning: the kept circuit as a whole, summarised.
SUMMARY_SCHEMA = """{"summary": "<2-5 sentences: the algorithm the kept nodes implement>"}"""

USER_SUMMARY = """TASK
{task}

TARGET
{target_id}: {target_label}

The graph was pruned {mode} in {n_parts} parts. These are the nodes that were kept, with the role
given to each (format: id | kind | layer | position 'token' | role):
{kept_lines}

Notes written for each part:
{part_notes}

Summarise the algorithm this circuit implements. Reply with ONE JSON object of exactly this shape and nothing else:
{schema}"""

# What each built-in task asks of the model, for the TASK section of the prompts.
TASK_DESCRIPTIONS = {
    "brackets": "Bracket closing: inside an open parenthesis the model should predict ')' rather than '.', "
    "and outside one '.' rather than ')'. The traced output is logit(correct) - logit(incorrect).",
    "sva": "Subject-verb agreement: after a subject noun phrase (with distractor nouns in between), the model should "
    "predict the verb form that agrees in number with the subject (' are' vs ' is'). The traced output is "
    "logit(correct) - logit(incorrect).",
    "ioi": "Indirect-object identification: in 'When Mary and John went to the store, John gave a drink to', the model "
    "should predict the name that was not repeated (' Mary') rather than the repeated one (' John'). The traced "
    "output is logit(correct) - logit(incorrect).",
}

# A graph traced from one typed prompt, not a named task.
PROMPT_TASK = "Explain how the model produces the traced output for this prompt."
