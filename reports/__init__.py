"""decodiff.reports."""
