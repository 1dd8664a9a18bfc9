import pytest

from tests.support.fhir_validator import shared_validator


@pytest.fixture(scope="module")
def validator():
    return shared_validator()
