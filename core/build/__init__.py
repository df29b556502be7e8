"""Building the embedded default: corpus, tasks, tokenizer, model and dictionary training, evaluation.

`python -m core build-default` runs `pipeline`; everything else only reads what it wrote (see core/paths.py)."""
