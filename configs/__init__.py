"""decodiff.configs."""
