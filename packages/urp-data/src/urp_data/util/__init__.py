"""Small helpers below every layer of urp-data, shared by urp-train and urp-eval."""
