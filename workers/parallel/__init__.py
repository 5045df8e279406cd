"""Tensor parallelism: the torch.distributed group and a rank's slice of the model, rank 0's
dealings with its followers, their reports, and the watch over them."""
