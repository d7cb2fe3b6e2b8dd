"""Earlier import paths of the messaging layer."""
