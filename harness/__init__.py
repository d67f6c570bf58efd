"""decodiff.harness."""
