"""A secret held in a Prefect Secret block resolves through a prefect: reference and stays masked."""

from __future__ import annotations


def test_secret_from_prefect_block(prefect_db):
    from prefect.blocks.system import Secret as PrefectSecret

    from cutover.secrets import resolve

    PrefectSecret(value="block-held-value-123").save("pec-test-tsig", overwrite=True)
    secret = resolve("prefect:pec-test-tsig")
    assert secret.reveal() == "block-held-value-123" and "block-held-value-123" not in repr(secret)


def test_prefect_block_missing_is_clear_error(prefect_db):
    import pytest

    from cutover.errors import SecretError
    from cutover.secrets import resolve

    with pytest.raises(SecretError, match="prefect:no-such-block cannot be loaded"):
        resolve("prefect:no-such-block")
