"""Training's parts, below the orchestrator (tunelab.train): the checks before any weights load (preflight), the
Hugging Face Trainer as tunelab configures it (trainer), its loss on answer tokens (loss), padding-free batches
(padding_free), activation checkpointing, and progress display."""
