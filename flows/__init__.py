"""Prefect flows: the pipeline (`avar`) and the scheduled re-evaluation (`avar-reevaluate`)."""
