"""urp_data."""
