"""The cluster engine's own Lambda, on ParallelCluster's layer: every other function reaches
ParallelCluster through it (lsstctl/adapters/engine_function.py), and stays small."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lsstctl import wiring
from lsstctl.adapters.engine_function import serve
from lsstctl.observability import bind, invocation_context, logger


@invocation_context(correlation_id_path="name")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    bind(cluster=event.get("name"), action=event.get("operation"))
    deps = wiring.engine_deps()
    answer = serve(deps.engine, deps.validator, event)
    if "error" in answer:
        logger.warning("engine operation refused", extra={"error": answer["error"].get("type")})
    return answer
