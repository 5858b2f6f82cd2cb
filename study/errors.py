"""Errors that carry a user-facing message; the CLI turns them into exit code 2."""


class UserError(Exception):
    """Bad input from the user (protocol, paths, flags). The message names the problem and the fix."""


class ProtocolError(UserError):
    """A protocol file failed validation.

    ``path`` is the key path inside the file (``tasks[0].max_train_examples``) so a researcher
    can find the offending line; ``fix`` says what to write instead.
    """

    def __init__(self, file: str | None, path: str, problem: str, fix: str = ""):
        self.file, self.path, self.problem, self.fix = file, path, problem, fix
        where = f"{file}: " if file else ""
        key = f"{path}: " if path else ""
        tail = f" Fix: {fix}" if fix else ""
        end = "" if problem.endswith((".", "?")) else "."  # (a did-you-mean hint already ends the sentence)
        super().__init__(f"{where}{key}{problem}{end}{tail}")
