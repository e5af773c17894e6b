"""The error vocabulary of the engine.

One subclass per `error_code` of the contract (altcraft-api.md §4). Each carries the numeric `error` it maps to;
only `api/` turns that into an HTTP status. Messages are written for the integrator reading `error_text`.
"""

from __future__ import annotations


class LoyaltyError(Exception):
    """Base of every error the engine reports to a caller."""

    error = 500
    code = "internal_error"

    def __init__(self, message: str | None = None):
        self.message = message or self.__doc__ or self.code
        super().__init__(self.message)


class InvalidRequest(LoyaltyError):
    """The body is not valid JSON/XML, or not an object."""

    error, code = 400, "invalid_request"


class MissingParameter(LoyaltyError):
    """A required parameter (or a lookup field of the chosen matching) is absent."""

    error, code = 400, "missing_parameter"

    def __init__(self, name: str):
        super().__init__(f"Missing required parameter: {name}")
        self.parameter = name


class InvalidParameter(LoyaltyError):
    """Wrong type, bad enum, bad date, bad amount, limit out of range, contradicting ids."""

    error, code = 400, "invalid_parameter"

    def __init__(self, name: str, reason: str):
        super().__init__(f"Invalid parameter {name}: {reason}")
        self.parameter = name


class TokenMissing(LoyaltyError):
    """No token in the body nor in the Authorization header."""

    error, code = 401, "token_missing"


class TokenInvalid(LoyaltyError):
    """The token is unknown or revoked."""

    error, code = 403, "token_invalid"


class Forbidden(LoyaltyError):
    """The token is valid but not allowed this program, database or operation."""

    error, code = 403, "forbidden"


class NotFound(LoyaltyError):
    """Base of the 404 family."""

    error = 404


class ProgramNotFound(NotFound):
    """No loyalty program with that id."""

    code = "program_not_found"


class CurrencyNotFound(NotFound):
    """No points currency with that iid/eid in the program."""

    code = "currency_not_found"


class PromotionNotFound(NotFound):
    """No trigger promotion with that id or external id in the program."""

    code = "promotion_not_found"


class TierGroupNotFound(NotFound):
    """No tier group with that id in the program."""

    code = "tier_group_not_found"


class ProfileNotFound(NotFound):
    """Matching found no profile."""

    code = "profile_not_found"


class NotAMember(NotFound):
    """The profile exists but is not an active member of the program."""

    code = "not_a_member"


class TransactionNotFound(NotFound):
    """No transaction with that id or eid visible to the token."""

    code = "transaction_not_found"


class TaskNotFound(NotFound):
    """No export task with that id."""

    code = "task_not_found"


class DatabaseNotFound(NotFound):
    """No profile database with that db_id."""

    code = "database_not_found"


class Conflict(LoyaltyError):
    """Base of the 409 family."""

    error = 409


class AmbiguousMatch(Conflict):
    """Matching (or a transaction_eid without program) found more than one candidate."""

    code = "ambiguous_match"


class DuplicateTransactionEid(Conflict):
    """The transaction_eid was already used in this program by a request with a different payload."""

    code = "duplicate_transaction_eid"


class TransactionState(Conflict):
    """The operation is not allowed in the transaction's current state."""

    code = "transaction_state"


class ProgramInactive(Conflict):
    """The program is archived."""

    code = "program_inactive"


class PromotionInactive(Conflict):
    """The promotion is inactive or outside its dates."""

    code = "promotion_inactive"


class PromotionLimitReached(Conflict):
    """The promotion's per-member or per-day limit is used up."""

    code = "promotion_limit_reached"


class DuplicateProfile(Conflict):
    """A profile with the same unique value (email or a unique custom field) already exists."""

    code = "duplicate_profile"


class PayloadTooLarge(LoyaltyError):
    """The body is larger than the configured limit."""

    error, code = 413, "payload_too_large"


class InsufficientPoints(LoyaltyError):
    """A redemption asks for more than the active balance."""

    error, code = 422, "insufficient_points"


class AmountOutOfBounds(LoyaltyError):
    """The amount is outside the promotion rule's bounds or differs from its static amount."""

    error, code = 422, "amount_out_of_bounds"


class RateLimited(LoyaltyError):
    """The token exceeded its request rate."""

    error, code = 429, "rate_limited"


class Unavailable(LoyaltyError):
    """The store is unreachable or stayed busy through every retry; safe to retry."""

    error, code = 503, "unavailable"
