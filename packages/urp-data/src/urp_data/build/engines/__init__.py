"""Where chunks are cut: this machine's processes (``local``) or a Ray cluster (``ray``)."""
