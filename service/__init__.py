"""Phenolab service: the REST API, the job queue, the workers and the `phenolab` CLI."""
