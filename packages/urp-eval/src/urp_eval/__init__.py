"""urp_eval."""
