"""Earlier import paths of the LLM layer."""
