"""What can go wrong when serving, as exception types that know nothing about HTTP.

Each error carries a stable `code` (the `error.code` clients see); the HTTP layer maps codes to
statuses in one place (`earshot.api.errors`), and the library user catches the types.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service reports to a caller."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- the audio the caller sent ------------------------------------------------------------------
class AudioError(ServiceError):
    code = "invalid_audio"


class UndecodableAudio(AudioError):
    code = "undecodable_audio"


class EmptyAudio(AudioError):
    code = "empty_audio"


class NonFiniteAudio(AudioError):
    code = "non_finite_audio"


class AudioTooLong(AudioError):
    code = "audio_too_long"


class BodyTooLarge(AudioError):
    code = "body_too_large"


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"


class InvalidInput(ServiceError):
    """A well-formed request whose content is wrong (e.g. an OpenAI input that is not a data URI)."""

    code = "invalid_input"


class NoTextTower(InvalidInput):
    """Text asked of a model without a text tower (only CLAP bundles have one)."""

    code = "no_text_tower"


class InvalidText(InvalidInput):
    """Text that cannot be embedded: empty, too long, or too many strings in one request."""

    code = "invalid_text"


# -- search -------------------------------------------------------------------------------------
class UnknownIndex(ServiceError):
    code = "index_not_found"


# -- the engine ---------------------------------------------------------------------------------
class UnknownModel(ServiceError):
    code = "model_not_found"


class NotReady(ServiceError):
    code = "not_ready"


class Draining(NotReady):
    code = "draining"


class SelfTestFailedError(NotReady):
    """A model gave other outputs on its bundle's self-test probe than the bundle says it must."""

    code = "self_test_failed"


class QueueFull(ServiceError):
    code = "queue_full"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ServiceError):
    code = "deadline_exceeded"


class InferenceFailed(ServiceError):
    code = "inference_failed"


# -- the HTTP exchange --------------------------------------------------------------------------
class Unauthorized(ServiceError):
    code = "unauthorized"


class ClientDisconnected(ServiceError):
    """The caller went away before its answer was ready; its pending windows were dropped."""

    code = "client_closed_request"
