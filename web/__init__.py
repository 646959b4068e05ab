"""`sohoa web`: the province office's read-only page over the progress store."""
