"""The errors a user can fix: the CLI prints each as one line (exit 1), never a traceback
(`avar --debug ...` shows it)."""


class UserError(Exception):
    """A problem with the input, the environment or a server, said in one line that names
    the file, key, path or address and what to do."""
