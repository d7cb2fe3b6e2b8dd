"""Earlier import paths of the agents."""
