"""ievents: the Integration Events log pipeline."""
