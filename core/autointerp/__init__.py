"""Automated interpretability: explain latents from sampled examples and score the explanations.

    examples.py        latents of a dictionary → example sets (train by strategy, test, negatives) → text
    explainers.py      LLM explainer (prompts/explainer.py, or prompts/contrastive.py with near misses) and the
                       baseline:token-stats and baseline:contrastive-token-stats explainers
    scorers/           detection, fuzzing (shared ClassifierScorer base), simulation, surprisal, embedding, intervention;
                       intruder (optional)
    judges.py          the offline judge judge:minilm-similarity; embedder.py: all-MiniLM-L6-v2 and window embeddings
    random_latents.py  the random-direction baseline
    engine.py          the resumable pipeline; explain_and_score_latent for the app
    default.py         ensure_default_explanations for the default workspace
    commands.py        `python -m core explain` / `score` / `export-neuronpedia`
    delphi_metrics.py  delphi's pooled balanced accuracy, precision, recall, F1, AUC beside our mean of latents
    neuronpedia_export.py  latents, activations, explanations and scores in Neuronpedia's bulk-import layout
LLM calls go through core/llm/client.py; rows are stored by core/store/ (migration 2).
"""
