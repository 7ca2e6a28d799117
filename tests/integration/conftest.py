"""Fixtures shared by this layer: the API harness (the app driven in-process, answers
checked against openapi.yaml) and the control plane in moto on a controlled clock."""

from tests.integration.api_contract import api, chalice_app, contract, spec  # noqa: F401  (fixtures)
from tests.integration.plane import plane  # noqa: F401  (fixture)
