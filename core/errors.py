"""One family of domain errors; each face (admin, API, command, consumer) translates them in one place."""


class PusherError(Exception):
    """A domain error with a stable machine code and a message an operator can act on."""

    code = "pusher_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidInput(PusherError):
    """Input that cannot be handled, whatever face it came through (not JSON, a missing field,
    text no store accepts...)."""

    code = "invalid_input"


class ContactParseError(InvalidInput):
    code = "contact_unparsable"


class RuleError(PusherError):
    code = "rule_invalid"


class CredentialError(PusherError):
    """A certificate or key that cannot be parsed or cannot send."""

    code = "credential_invalid"


class UnknownDevice(PusherError):
    """No device answers to what a request names, or the request may not name it: one answer for
    both, so that it tells nobody which accounts exist."""

    code = "device_unknown"
