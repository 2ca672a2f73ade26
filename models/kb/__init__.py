"""The knowledge base of risk examples: vectors of operators' examples, matched by similarity."""
