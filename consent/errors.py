"""The consent package's one root exception: a stable code a client can act on."""

from __future__ import annotations


class ConsentError(Exception):
    """A consent operation was refused; `code` is stable, `message` is for people.

    Codes: `no_representative_on_record`, `out_of_order`, `already_complete`,
    `unknown_field`, `field_already_signed`, `no_such_field`, `bad_signature`,
    `bad_public_key`, `unknown_template`, `not_signed`, `bad_state`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
