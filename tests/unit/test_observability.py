"""Log context is each invocation's own, even when many run at once in one process (the
emulator): no line carries another function's name, request or correlation id."""

from __future__ import annotations

import io
import json
import logging
import threading

from lsstctl.emulator.glue import LambdaContext
from lsstctl.handlers import trigger_handler
from lsstctl.observability import bind, invocation_context, logger


def test_concurrent_invocations_keep_their_own_log_context():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    level = logger.log_level
    logger.setLevel("INFO")
    together = threading.Barrier(2)

    def work(tag: str):
        def run(event):
            bind(cluster=f"cluster-{tag}")
            together.wait(timeout=10)  # both invocations are inside at once
            logger.info(f"line of {tag}")
            together.wait(timeout=10)
            logger.info(f"second line of {tag}")
            return {}

        return run

    @invocation_context(correlation_id_path="execution")
    def step(event, context):
        together.wait(timeout=10)
        logger.info(f"line of {event['tag']}")
        return {}

    handlers = {"a": trigger_handler(work("a")), "b": trigger_handler(work("b"))}
    contexts = {t: LambdaContext(function_name=f"fn-{t}", invoked_function_arn=f"arn:{t}") for t in handlers}
    ids = {t: c.aws_request_id for t, c in contexts.items()}
    threads = [threading.Thread(target=handlers[t], args=({}, contexts[t])) for t in handlers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        steps = [
            threading.Thread(
                target=step,
                args=(
                    {"tag": t, "execution": f"exec-{t}"},
                    LambdaContext(function_name=f"step-{t}", invoked_function_arn="a"),
                ),
            )
            for t in ("c", "d")
        ]
        for thread in steps:
            thread.start()
        for thread in steps:
            thread.join(timeout=20)
    finally:
        logger._logger.removeHandler(handler)
        logger.setLevel(level)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 6
    for line in lines:
        tag = line["message"].split()[-1]
        if tag in ("a", "b"):
            assert line["function_name"] == f"fn-{tag}" and line["cluster"] == f"cluster-{tag}", line
            assert line["function_request_id"] == ids[tag]
        else:
            assert line["function_name"] == f"step-{tag}" and line["correlation_id"] == f"exec-{tag}", line
            assert "cluster" not in line


def test_without_tracing_the_tracer_leaves_functions_as_they_are(monkeypatch) -> None:
    from lsstctl.observability import LazyTracer, tracing_on

    def handler(event, context):
        return event

    tracer = LazyTracer("lsstctl")
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    assert not tracing_on()  # not in a Lambda
    assert tracer.capture_lambda_handler(capture_response=False)(handler) is handler
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "lsstctl-guard")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    assert not tracing_on()  # the template's default
    assert tracer.capture_method(capture_response=False)(handler) is handler
    assert tracer._tracer is None  # nor was Powertools' Tracer built
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    assert tracing_on()  # TraceHandlers=true
