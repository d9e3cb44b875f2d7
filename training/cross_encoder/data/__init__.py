"""Training data for the cross-encoder: mined first-stage candidates (bundles) and groups."""
