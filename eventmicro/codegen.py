"""protoc-gen-eventmicro: a typed client and service skeleton for each ``service`` of a .proto.

::

    protoc -I. --python_out=. --mypy_out=. --eventmicro_out=. shop/orders/v1/orders.proto
        -> shop/orders/v1/orders_micro.py, next to orders_pb2.py

=====================  ================================  =====================================
proto                  eventmicro                        generated
=====================  ================================  =====================================
``service Orders``     service ``orders``                ``OrdersClient``, ``OrdersBase``,
                                                         ``ORDERS_SERVICE``, ``ORDERS_ENDPOINTS``
``rpc GetStock``       endpoint ``get_stock``            ``async def get_stock(...)``
                       (subject ``<service>.get_stock``)
``idempotency_level``  ``idempotent=True``               client calls default to retrying
``NO_SIDE_EFFECTS``                                       after a timeout
=====================  ================================  =====================================

The client takes anything with ``call(name, request, *, returns, timeout, idempotent)``: an
`eventmicro.Client`, or a handler's `Context` (its calls get what is left of the handler's
deadline). The skeleton is an abstract class with one abstract method per rpc; ``service()``
returns a `Service` whose endpoints are the instance's bound methods. Streaming rpcs are
refused. A .proto without a ``service`` gets no file.
"""

from __future__ import annotations

import keyword
import re
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

__all__ = ["generate", "main", "snake_case"]

_WORDS = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_RESERVED = frozenset({"service"})  # members of the generated classes besides the rpcs
_IDEMPOTENT = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)


class CodegenError(Exception):
    """A .proto this plugin cannot generate code for; reported by protoc with the file name."""


def snake_case(name: str) -> str:
    """``GetStock`` -> ``get_stock``, ``GetHTTPStatus`` -> ``get_http_status``.

    >>> snake_case("GetStock"), snake_case("Orders"), snake_case("GetHTTPStatus")
    ('get_stock', 'orders', 'get_http_status')
    """
    return _WORDS.sub("_", name).lower()


@dataclass(frozen=True, slots=True)
class _Type:
    module: str  # the Python module of the defining file, e.g. schemas.shop.orders.v1.orders_pb2
    path: str  # the message inside it, e.g. Outer.Inner


@dataclass(frozen=True, slots=True)
class _Rpc:
    method: str  # Python method name
    endpoint: str  # eventmicro endpoint name
    request: _Type
    reply: _Type
    idempotent: bool
    doc: str


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """The response to ``request``: one ``<name>_micro.py`` per file with services, or an error."""
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    files = {f.name: f for f in request.proto_file}
    types = {name: t for f in request.proto_file for name, t in _message_types(f)}
    for name in request.file_to_generate:
        proto = files[name]
        if not proto.service:
            continue
        try:
            content = _render(proto, types)
        except CodegenError as exc:
            response.error = f"{name}: {exc}"
            return response
        response.file.add(name=_strip_proto(name) + "_micro.py", content=content)
    return response


def main() -> int:
    """The protoc plugin: a CodeGeneratorRequest on stdin, a CodeGeneratorResponse on stdout."""
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())
    return 0


# --- reading descriptors --------------------------------------------------------------------------


def _strip_proto(name: str) -> str:
    return name.removesuffix(".proto")


def _module_of(file_name: str) -> str:
    """The module protoc's Python generator writes for ``file_name`` (``a/b-c.proto`` -> ``a.b_c_pb2``)."""
    return _strip_proto(file_name).replace("-", "_").replace("/", ".") + "_pb2"


def _message_types(proto: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, _Type]]:
    module = _module_of(proto.name)
    prefix = f".{proto.package}." if proto.package else "."

    def walk(messages: Sequence[descriptor_pb2.DescriptorProto], path: str) -> Iterator[tuple[str, _Type]]:
        for message in messages:
            inner = f"{path}{message.name}"
            yield prefix + inner, _Type(module, inner)
            yield from walk(message.nested_type, inner + ".")

    return walk(proto.message_type, "")


def _comment(proto: descriptor_pb2.FileDescriptorProto, path: Sequence[int]) -> str:
    for location in proto.source_code_info.location:
        if list(location.path) == list(path):
            text = textwrap.dedent(location.leading_comments.expandtabs()).strip()
            lines = [line.rstrip() for line in text.splitlines()]
            return "\n".join(lines).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return ""


def _rpcs(proto: descriptor_pb2.FileDescriptorProto, index: int, types: dict[str, _Type]) -> list[_Rpc]:
    service = proto.service[index]
    rpcs: list[_Rpc] = []
    for i, method in enumerate(service.method):
        label = f"rpc {service.name}.{method.name}"
        if method.client_streaming or method.server_streaming:
            raise CodegenError(f"{label}: streaming rpcs are not supported by eventmicro")
        endpoint = snake_case(method.name)
        if endpoint.startswith("_"):
            raise CodegenError(f"{label}: rpc names starting with '_' are not supported")
        if any(rpc.endpoint == endpoint for rpc in rpcs):
            raise CodegenError(f"{label}: another rpc of {service.name} is also named {endpoint!r}")
        python = f"{endpoint}_" if keyword.iskeyword(endpoint) or endpoint in _RESERVED else endpoint
        rpcs.append(
            _Rpc(
                method=python,
                endpoint=endpoint,
                request=types[method.input_type],
                reply=types[method.output_type],
                idempotent=method.options.idempotency_level in _IDEMPOTENT,
                doc=_comment(proto, [6, index, 2, i]),
            )
        )
    return rpcs


# --- writing Python -----------------------------------------------------------------------------


def _aliases(modules: set[str]) -> dict[str, str]:
    """An import name per module: its last part, or protoc's full alias where two would clash."""
    last = [m.rpartition(".")[2] for m in modules]
    return {
        m: m.rpartition(".")[2]
        if last.count(m.rpartition(".")[2]) == 1
        else m.replace("_", "__").replace(".", "_dot_")
        for m in modules
    }


def _import(module: str, alias: str) -> tuple[int, str, str]:
    """A sortable import line: straight imports before from-imports (isort's default)."""
    package, _, name = module.rpartition(".")
    if not package:
        return (0, module, f"import {module}" + (f" as {alias}" if alias != module else ""))
    return (1, package, f"from {package} import {name}" + (f" as {alias}" if alias != name else ""))


def _imports(modules: set[str]) -> tuple[list[str], list[str]]:
    aliases = _aliases(modules)
    third = [_import("google.protobuf.message.Message", "Message")]
    first = [(1, "eventmicro", "from eventmicro import Context, Service")]
    for module in modules:
        (third if module.startswith("google.") else first).append(_import(module, aliases[module]))
    return [line for *_, line in sorted(third)], [line for *_, line in sorted(first)]


def _isort_key(name: str) -> tuple[int, str]:
    """``__all__`` in ruff's order (RUF022): CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def _docstring(summary: str, detail: str, indent: str) -> list[str]:
    if not detail:
        return [f'{indent}"""{summary}"""']
    body = [f"{indent}{line}".rstrip() for line in detail.splitlines()]
    return [f'{indent}"""{summary}', "", *body, f'{indent}"""']


def _render(proto: descriptor_pb2.FileDescriptorProto, types: dict[str, _Type]) -> str:
    services = [(i, s, _rpcs(proto, i, types)) for i, s in enumerate(proto.service)]
    modules = {t.module for *_, rpcs in services for rpc in rpcs for t in (rpc.request, rpc.reply)}
    aliases = _aliases(modules)
    third, first = _imports(modules)
    exports = ["Caller"]
    body: list[str] = []
    for index, service, rpcs in services:
        const = snake_case(service.name).upper()
        exports += [f"{const}_ENDPOINTS", f"{const}_SERVICE", f"{service.name}Base", f"{service.name}Client"]
        body += _service(proto, index, rpcs, aliases)
    lines = [
        "# Generated by protoc-gen-eventmicro. DO NOT EDIT.",
        f"# source: {proto.name}",
        "# isort: skip_file",
        f'"""Typed eventmicro clients and service skeletons: {", ".join(s.name for s in proto.service)}."""',
        "",
        "from __future__ import annotations",
        "",
        "import abc",
        "from collections.abc import Mapping",
        "from typing import Any, Final, Protocol, TypeVar",
        "",
        *third,
        "",
        *first,
        "",
        "__all__ = [",
        *(f'    "{name}",' for name in sorted(exports, key=_isort_key)),
        "]",
        "",
        '_T = TypeVar("_T")',
        "_Endpoints = Mapping[str, tuple[type[Message], type[Message]]]",
        "",
        "",
        "class Caller(Protocol):",
        '    """What generated clients call: an `eventmicro.Client`, or a handler\'s `Context`."""',
        "",
        "    async def call(",
        "        self,",
        "        name: str,",
        "        request: object,",
        "        *,",
        "        returns: type[_T],",
        "        timeout: float | None = ...,",
        "        idempotent: bool = ...,",
        "    ) -> _T: ...",
        *body,
    ]
    return "\n".join(lines) + "\n"


def _service(
    proto: descriptor_pb2.FileDescriptorProto, index: int, rpcs: list[_Rpc], aliases: dict[str, str]
) -> list[str]:
    service = proto.service[index]
    full = f"{proto.package}.{service.name}" if proto.package else service.name
    name = snake_case(service.name)
    const = name.upper()
    doc = _comment(proto, [6, index])

    def ref(t: _Type) -> str:
        return f"{aliases[t.module]}.{t.path}"

    def endpoint(r: _Rpc) -> list[str]:
        line = f'    "{r.endpoint}": ({ref(r.request)}, {ref(r.reply)}),'
        if len(line) <= 88:
            return [line]
        return [f'    "{r.endpoint}": (', f"        {ref(r.request)},", f"        {ref(r.reply)},", "    ),"]

    out = [
        "",
        "",
        f'{const}_SERVICE: Final = "{name}"',
        f'"""The eventmicro service name of {full}."""',
        f"{const}_ENDPOINTS: Final[_Endpoints] = {{",
        *(line for r in rpcs for line in endpoint(r)),
        "}",
        '"""Endpoint name -> (request type, reply type)."""',
        "",
        "",
        f"class {service.name}Client:",
        *_docstring(
            f"Typed calls to the ``{name}`` service ({full}).",
            "Built on an `eventmicro.Client`, or on a handler's `Context` so that its calls get\n"
            "what is left of the handler's deadline.",
            "    ",
        ),
        "",
        '    __slots__ = ("_caller",)',
        "",
        "    def __init__(self, caller: Caller) -> None:",
        "        self._caller = caller",
    ]
    for r in rpcs:
        out += [
            "",
            f"    async def {r.method}(",
            "        self,",
            f"        request: {ref(r.request)},",
            "        *,",
            "        timeout: float | None = None,",
            f"        idempotent: bool = {r.idempotent},",
            f"    ) -> {ref(r.reply)}:",
            *_docstring(f"Call ``{name}.{r.endpoint}``.", r.doc, "        "),
            "        return await self._caller.call(",
            f'            "{name}.{r.endpoint}",',
            "            request,",
            f"            returns={ref(r.reply)},",
            "            timeout=timeout,",
            "            idempotent=idempotent,",
            "        )",
        ]
    out += [
        "",
        "",
        f"class {service.name}Base(abc.ABC):",
        *_docstring(
            f"The ``{name}`` service ({full}).",
            "Implement every rpc in a subclass; ``.service(version=...)`` on an instance is an\n"
            "`eventmicro.Service` serving its methods." + (f"\n\n{doc}" if doc else ""),
            "    ",
        ),
    ]
    for r in rpcs:
        out += [
            "",
            "    @abc.abstractmethod",
            f"    async def {r.method}(",
            "        self,",
            f"        request: {ref(r.request)},",
            "        ctx: Context,",
            f"    ) -> {ref(r.reply)}:",
            *_docstring(f"Serve ``{name}.{r.endpoint}``.", r.doc, "        "),
        ]
    out += [
        "",
        "    def service(",
        "        self,",
        "        *,",
        "        version: str,",
        '        description: str = "",',
        "        **options: Any,",
        "    ) -> Service:",
        f'        """A `Service` named ``{name}`` serving these methods (``options``: as `Service`)."""',
        "        svc = Service(",
        f"            {const}_SERVICE,",
        "            version=version,",
        "            description=description,",
        "            **options,",
        "        )",
        *(
            f'        svc.rpc(name="{r.endpoint}"'
            + (", idempotent=True" if r.idempotent else "")
            + f")(self.{r.method})"
            for r in rpcs
        ),
        "        return svc",
    ]
    return out


if __name__ == "__main__":
    sys.exit(main())
