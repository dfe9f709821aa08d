"""Model architectures (zoo, imports); knows nothing of solver/."""
