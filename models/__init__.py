"""decodiff.models."""
