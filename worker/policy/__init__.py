"""Pure decisions: what to do with a job or an answer, no I/O."""
