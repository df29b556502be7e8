"""One latent at a time: its card (`cards`), example sampling (`sampling`) and explanation search (`search`)."""
