"""Fixtures of the API harness (the app driven in-process, answers checked against
openapi.yaml), shared by the API tests of this layer."""
from tests.integration.api_contract import api, chalice_app, contract, spec  # noqa: F401  (fixtures)
