"""The peers' servers the bench runs beside ours: each a tiny script in its stock configuration."""
