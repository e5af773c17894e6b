"""Pure business rules: no framework, no storage, no wall clock."""
