"""One module per `decodiff` command."""
