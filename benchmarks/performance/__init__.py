"""Performance measurements (throughput, server overhead, export memory), apart from the model evaluations."""
