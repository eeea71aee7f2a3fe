"""urp_train."""
