"""Every backend handler takes exactly the arguments the worker decodes for its call."""
import importlib
import inspect

import pytest

from orion_server.generated.cudart_table import CALLS

BACKENDS = [("orion_server.backends.host", "HostBackend"),
            ("orion_server.backends.cuda", "CudaBackend")]


@pytest.mark.parametrize("module,name", BACKENDS)
def test_handler_arity_matches_the_call_table(module, name):
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as e:   # cuda-python is an optional (gpu) dependency
        pytest.skip(str(e))
    wrong = []
    for call in CALLS.values():
        handler = getattr(cls, call.name, None)
        if handler is None:
            continue
        params = list(inspect.signature(handler).parameters.values())[1:]
        if any(p.kind == p.VAR_POSITIONAL for p in params):
            continue
        required = [p for p in params if p.default is inspect.Parameter.empty]
        expected = len([p for p in call.params if p.kind != "out"])
        if len(required) != expected:
            wrong.append(f"{call.name}: takes {len(required)}, the wire gives {expected}")
    assert not wrong, "\n".join(wrong)
