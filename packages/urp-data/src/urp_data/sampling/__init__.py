"""Where samples go and which split they join: H3 cells of an area, and geographic splits."""
