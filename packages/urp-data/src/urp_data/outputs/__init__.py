"""What a finished build is shown as: the dataset card (README.md) and the preview page."""
