"""Errors meant for the user: the message says what is wrong and what to do."""


class UserError(Exception):
    """Bad input (file, config, argument). The CLI prints the message without a traceback."""
