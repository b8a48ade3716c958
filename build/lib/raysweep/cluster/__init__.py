"""Stage 2, cluster: connecting to Ray, local `ray start` clusters, cloud hand-off, the token, job submission."""
