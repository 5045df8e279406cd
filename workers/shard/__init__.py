"""What runs a shard: the runtime (model, task view of the data, engines built once), the one
timing loop over batches, and the live metrics a worker reports while it runs."""
