"""The web studio: a small multi-user server that queues vivify jobs and serves their results."""
