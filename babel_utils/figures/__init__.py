"""Every figure of the notebooks, in one style."""
