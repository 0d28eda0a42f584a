"""The live pipeline: sources on their own threads -> latest-frame buffers -> one scheduler -> publishers."""
