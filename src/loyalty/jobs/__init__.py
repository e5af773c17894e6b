"""Background work: thin loops that call services and record what happened."""
