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


class BadMessage(PusherError):
    """An AMQP/HTTP message that cannot be handled (not JSON, missing fields...)."""

    code = "bad_message"


class ContactParseError(BadMessage):
    code = "contact_unparsable"


class RuleError(PusherError):
    code = "rule_invalid"


class CredentialError(PusherError):
    """A certificate or key that cannot be parsed or cannot send."""

    code = "credential_invalid"


class ProviderError(PusherError):
    code = "provider_error"
