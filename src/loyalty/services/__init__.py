"""Use cases: one function each, shared by the API, the CLI, the jobs and the admin UI."""
