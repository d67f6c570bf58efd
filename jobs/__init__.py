"""decodiff.jobs."""
