"""Prefect flows and tasks: they compose cutover/ and checks/ and hold no business logic."""
