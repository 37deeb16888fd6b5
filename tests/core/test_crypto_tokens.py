"""Personal data at rest and the subject's signed links."""

import os

import pytest

from core.crypto import DecryptionError, decrypt, encrypt, keyed_hash, normalise_email
from core.tokens import TokenError, make_token, nonce_matches, read_token

KEY = os.urandom(32)


def test_encryption_round_trips_unicode_and_hides_the_plaintext():
    sealed = encrypt(KEY, "иван.петров@пример.рф", b"ctx")
    assert "иван".encode() not in sealed
    assert decrypt(KEY, sealed, b"ctx") == "иван.петров@пример.рф"


@pytest.mark.parametrize("tamper", ["flip", "context", "key"])
def test_tampered_ciphertext_is_refused(tamper):
    sealed = bytearray(encrypt(KEY, "alice@example.com", b"ctx"))
    key, context = KEY, b"ctx"
    if tamper == "flip":
        sealed[-1] ^= 1
    elif tamper == "context":
        context = b"another row"
    else:
        key = os.urandom(32)
    with pytest.raises(DecryptionError):
        decrypt(key, bytes(sealed), context)


def test_keyed_hash_finds_the_same_person_whatever_the_case_and_depends_on_the_key():
    first = keyed_hash(KEY, normalise_email(" Alice@Example.COM "))
    assert first == keyed_hash(KEY, normalise_email("alice@example.com"))
    assert first != keyed_hash(os.urandom(32), normalise_email("alice@example.com"))


def test_token_is_bound_to_its_purpose_and_request():
    token = make_token("s3cret", "verify", "DSR-AAAA0000", "n1")
    assert read_token("s3cret", "verify", token, 60) == ("DSR-AAAA0000", "n1")
    with pytest.raises(TokenError) as wrong_purpose:
        read_token("s3cret", "status", token, 60)
    assert wrong_purpose.value.reason == "invalid"
    with pytest.raises(TokenError):
        read_token("other secret", "verify", token, 60)
    with pytest.raises(TokenError):
        read_token(
            "s3cret", "verify", token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], 60
        )


def test_expired_token_says_expired_and_names_its_request():
    token = make_token("s3cret", "verify", "DSR-AAAA0000", "n1")
    with pytest.raises(TokenError) as expired:
        read_token("s3cret", "verify", token, -1)
    assert (expired.value.reason, expired.value.reference) == ("expired", "DSR-AAAA0000")


def test_nonce_must_match_and_a_used_link_has_none():
    assert nonce_matches("abc", "abc")
    assert not nonce_matches("abc", "abd")
    assert not nonce_matches(None, "abc")
