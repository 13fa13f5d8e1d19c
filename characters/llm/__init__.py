"""The LLM provider boundary: everything Parley knows about model APIs lives here."""
