"""Stage 1, config: the experiment spec, cluster profiles and the search space, validated once."""
