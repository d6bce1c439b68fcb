"""The composition root: settings, database, telemetry, API, CLI, jobs."""
