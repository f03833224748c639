"""Message Batches mode: gather routed requests per model, submit, poll and ingest results crash-safely."""
