"""The worker: claims queued runs with a lease-bound transaction, executes them, and finishes
them with a write that compares its claim. `worker.Worker` composes `claiming` and `executing`."""
