"""The one error type of job submission: a message for the user, nothing submitted."""

from __future__ import annotations


class JobError(RuntimeError):
    """A job could not be rendered, submitted or queried; the message is one line naming the
    option, file or address and what was expected. Raised before anything is submitted where
    the problem can be known in advance."""
