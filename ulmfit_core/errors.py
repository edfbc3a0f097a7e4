"""User-facing errors: a message that says what is wrong and what to do."""


class InputError(ValueError):
    """Bad input given to a stage (empty corpus, wrong vocab size, ...).

    CLIs turn it into a one-line error message and a non-zero exit, without a traceback.
    """
