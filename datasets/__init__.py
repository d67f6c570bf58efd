"""decodiff.datasets."""
