"""The one error a command raises for a user's mistake."""


class UserError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit status 2."""
