"""The subjects of study: models by name (`models`), their dictionaries (`dictionaries`) and
token helpers every stage shares (`tokens`)."""
