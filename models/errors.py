"""Error types of decodiff.models, importable without torch or diffusers (the CLI maps them to
exit codes before loading anything heavy)."""


class VAEError(ValueError):
    """A VAE folder or file that cannot be used: the message names it and what was expected."""


class WeightsError(ValueError):
    """UNet weights from elsewhere that cannot be read or mapped: the message says why."""
