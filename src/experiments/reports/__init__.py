"""Scripts that regenerate the documents in docs/results/ from runs of the studies."""
