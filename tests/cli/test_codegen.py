"""protoc-gen-eventmicro: generated names, methods and imports; the output imports, serves and type-checks."""

import importlib
import inspect
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc

from eventmicro import Context, Service
from eventmicro.codegen import generate, snake_case
from eventmicro.service.handlers import HandlerKind, inspect_handler

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INCLUDE = Path(grpc_tools.__file__).parent / "_proto"

COMMON = """
syntax = "proto3";
package acme.common.v1;

message Money {
  int64 cents = 1;
}
"""

# A service block using its own (nested) messages, another file's and a well-known type; rpc
# names that are a Python keyword and a member of the generated classes; an idempotent rpc.
PRICING = """
syntax = "proto3";
package acme.pricing.v1;

import "acme/common/v1/common.proto";
import "google/protobuf/empty.proto";

message Quote {
  message Line {
    string sku = 1;
  }
  repeated Line lines = 1;
}

// Prices things.
//
// Says "why" with a \\ backslash and \"\"\" quotes.
service PriceBook {
  // Prices one line.
  rpc GetPrice(Quote.Line) returns (acme.common.v1.Money);
  rpc Import(Quote) returns (google.protobuf.Empty);
  rpc Ping(google.protobuf.Empty) returns (google.protobuf.Empty) {
    option idempotency_level = NO_SIDE_EFFECTS;
  }
}

service HTTPAudit {
  rpc Service(Quote) returns (Quote);
}
"""

# The ways the output is meant to be used, and one call mypy must refuse (the marked line).
USAGE = """
from __future__ import annotations

from google.protobuf import empty_pb2

from acme.common.v1 import common_pb2
from acme.pricing.v1 import pricing_pb2 as pricing
from acme.pricing.v1.pricing_micro import (
    PRICE_BOOK_SERVICE,
    HTTPAuditBase,
    PriceBookBase,
    PriceBookClient,
)
from eventmicro import Client, Context, Service


class PriceBook(PriceBookBase):
    async def get_price(self, request: pricing.Quote.Line, ctx: Context) -> common_pb2.Money:
        return common_pb2.Money(cents=len(request.sku))

    async def import_(self, request: pricing.Quote, ctx: Context) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    async def ping(self, request: empty_pb2.Empty, ctx: Context) -> empty_pb2.Empty:
        return await PriceBookClient(ctx).ping(request)


class Audit(HTTPAuditBase):
    async def service_(self, request: pricing.Quote, ctx: Context) -> pricing.Quote:
        return request


def serve() -> Service:
    return PriceBook().service(version="1.0.0", description=PRICE_BOOK_SERVICE)


async def call(client: Client) -> int:
    money = await PriceBookClient(client).get_price(pricing.Quote.Line(sku="a"), timeout=1.5)
    await PriceBookClient(client).get_price(pricing.Quote())  # wrong request type
    return money.cents
"""


def protoc_args(src: Path, out: Path, *extra: str) -> list[str]:
    return [
        "protoc",
        f"-I{src}",
        f"-I{INCLUDE}",
        *extra,
        "acme/common/v1/common.proto",
        "acme/pricing/v1/pricing.proto",
    ]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test protos compiled by protoc with the installed plugins (the path `make schemas` takes)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("out")
    for name, text in {"common": COMMON, "pricing": PRICING}.items():
        (src / f"acme/{name}/v1").mkdir(parents=True)
        (src / f"acme/{name}/v1/{name}.proto").write_text(text)
    plugins = [f"--plugin=protoc-gen-{p}={BIN / f'protoc-gen-{p}'}" for p in ("mypy", "eventmicro")]
    outputs = [f"--python_out={out}", f"--mypy_out={out}", f"--eventmicro_out={out}"]
    assert protoc.main(protoc_args(src, out, *plugins, *outputs)) == 0
    for package in ("acme", "acme/common", "acme/common/v1", "acme/pricing", "acme/pricing/v1"):
        (out / package / "__init__.py").touch()
    (out / "acme/usage.py").write_text(USAGE)
    return out


@pytest.fixture(scope="module")
def usage(module: ModuleType) -> ModuleType:
    return importlib.import_module("acme.usage")


@pytest.fixture(scope="module")
def code(generated: Path) -> str:
    return (generated / "acme/pricing/v1/pricing_micro.py").read_text()


@pytest.fixture(scope="module")
def module(generated: Path) -> Iterator[ModuleType]:
    """The generated module, imported (and the usage module beside it: `usage` fixture)."""
    sys.path.insert(0, str(generated))
    try:
        yield importlib.import_module("acme.pricing.v1.pricing_micro")
    finally:
        sys.path.remove(str(generated))
        for name in [n for n in sys.modules if n == "acme" or n.startswith("acme.")]:
            del sys.modules[name]


def request_for(tmp_path: Path, proto: str) -> plugin_pb2.CodeGeneratorRequest:
    """What protoc hands a plugin for ``proto`` (a file named x.proto), built in-process."""
    (tmp_path / "x.proto").write_text(textwrap.dedent(proto))
    descriptors = tmp_path / "x.pb"
    args = ["protoc", f"-I{tmp_path}", f"-I{INCLUDE}", "--include_imports", "--include_source_info"]
    assert protoc.main([*args, f"--descriptor_set_out={descriptors}", "x.proto"]) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes()).file
    return plugin_pb2.CodeGeneratorRequest(file_to_generate=["x.proto"], proto_file=files)


# --- names, methods, imports --------------------------------------------------------------------


def test_snake_case() -> None:
    assert [snake_case(n) for n in ("Place", "GetStock", "HTTPAudit", "GetV2Order", "get_stock")] == [
        "place",
        "get_stock",
        "http_audit",
        "get_v2_order",
        "get_stock",
    ]


def test_a_file_per_proto_with_services_next_to_its_pb2(generated: Path) -> None:
    assert sorted(p.name for p in generated.rglob("*_micro.py")) == ["pricing_micro.py"]
    assert (generated / "acme/pricing/v1/pricing_pb2.py").exists()


def test_imports_every_file_whose_messages_the_rpcs_use(code: str) -> None:
    assert "from google.protobuf import empty_pb2\nfrom google.protobuf.message import Message\n" in code
    assert "from acme.common.v1 import common_pb2\nfrom acme.pricing.v1 import pricing_pb2\n" in code
    assert "from eventmicro import Context, Service\n" in code
    assert code.startswith(
        "# Generated by protoc-gen-eventmicro. DO NOT EDIT.\n# source: acme/pricing/v1/pricing.proto\n"
    )


def test_names_subjects_and_types(code: str) -> None:
    assert 'PRICE_BOOK_SERVICE: Final = "price_book"' in code
    assert 'HTTP_AUDIT_SERVICE: Final = "http_audit"' in code
    assert "class PriceBookClient:" in code
    assert "class PriceBookBase(abc.ABC):" in code
    client_method = """
    async def get_price(
        self,
        request: pricing_pb2.Quote.Line,
        *,
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> common_pb2.Money:
        \"\"\"Call ``price_book.get_price``.

        Prices one line.
        \"\"\"
        return await self._caller.call(
            "price_book.get_price",
            request,
            returns=common_pb2.Money,
            timeout=timeout,
            idempotent=idempotent,
        )
"""
    assert client_method in code
    assert "    async def ping(\n        self,\n        request: empty_pb2.Empty,\n" in code
    assert "        idempotent: bool = True,\n    ) -> empty_pb2.Empty:" in code  # NO_SIDE_EFFECTS


def test_python_names_avoid_keywords_and_members_but_endpoints_keep_theirs(code: str) -> None:
    assert "async def import_(" in code
    assert 'svc.rpc(name="import")(self.import_)' in code
    assert "async def service_(" in code
    assert 'svc.rpc(name="service")(self.service_)' in code
    assert '"http_audit.service",' in code


def test_proto_comments_become_docstrings_safely(module: ModuleType) -> None:
    doc = module.PriceBookBase.__doc__
    assert 'Says "why" with a \\ backslash and """ quotes.' in doc
    assert (
        inspect.getdoc(module.PriceBookBase.get_price)
        == "Serve ``price_book.get_price``.\n\nPrices one line."
    )


# --- the generated module at run time -------------------------------------------------------------


def test_endpoints_metadata(module: ModuleType) -> None:
    pricing = importlib.import_module("acme.pricing.v1.pricing_pb2")
    common = importlib.import_module("acme.common.v1.common_pb2")
    assert module.PRICE_BOOK_ENDPOINTS["get_price"] == (pricing.Quote.Line, common.Money)
    assert list(module.PRICE_BOOK_ENDPOINTS) == ["get_price", "import", "ping"]
    assert dict(module.HTTP_AUDIT_ENDPOINTS) == {"service": (pricing.Quote, pricing.Quote)}


def test_skeleton_serves_bound_methods(module: ModuleType, usage: ModuleType) -> None:
    impl = usage.Audit()
    svc = impl.service(version="1.2.3", description="audits", metadata={"team": "shop"})
    assert isinstance(svc, Service)
    assert (svc.name, svc.version, svc.description, svc.metadata) == (
        "http_audit",
        "1.2.3",
        "audits",
        {"team": "shop"},
    )
    [spec] = svc.handlers
    assert (spec.name, spec.subject, spec.queue, spec.idempotent) == (
        "service",
        "http_audit.service",
        "http_audit",
        False,
    )
    assert spec.function == impl.service_
    assert spec.message_types == (importlib.import_module("acme.pricing.v1.pricing_pb2").Quote,)
    assert spec.takes_context
    with pytest.raises(TypeError, match="abstract"):
        module.PriceBookBase()


def test_idempotent_rpcs_are_registered_idempotent(usage: ModuleType) -> None:
    svc = usage.serve()
    assert (svc.name, svc.description) == ("price_book", "price_book")
    assert {h.name: h.idempotent for h in svc.handlers} == {"get_price": False, "import": False, "ping": True}
    assert [h.subject for h in svc.handlers] == [
        "price_book.get_price",
        "price_book.import",
        "price_book.ping",
    ]


async def method(self: object, request: int, ctx: Context) -> str:  # for the bound-method test
    return str(request)


def test_bound_methods_are_handlers() -> None:
    class Holder:
        handle = method

    bound = Holder().handle
    assert inspect_handler(bound, HandlerKind.RPC) == ((int,), str, True)


# --- the output type-checks and is formatted -----------------------------------------------------


def test_generated_code_type_checks_under_mypy_strict(generated: Path) -> None:
    files = ["acme/usage.py", "acme/pricing/v1/pricing_micro.py"]
    result = subprocess.run(
        [BIN / "mypy", "--strict", "--no-incremental", "--config-file=", "--show-error-codes", *files],
        cwd=generated,
        env={"MYPYPATH": str(ROOT), "PATH": str(BIN)},
        capture_output=True,
        text=True,
        check=False,
        timeout=110,
    )
    wrong = 1 + USAGE.splitlines().index(next(s for s in USAGE.splitlines() if "wrong request type" in s))
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout
    assert errors[0].startswith(
        f'acme/usage.py:{wrong}: error: Argument 1 to "get_price" of "PriceBookClient"'
    )
    assert "[arg-type]" in errors[0]


def test_generated_code_is_ruff_formatted(generated: Path) -> None:
    target = generated / "acme/pricing/v1/pricing_micro.py"
    for line_length in ("88", "110"):
        result = subprocess.run(
            [BIN / "ruff", "format", "--isolated", "--line-length", line_length, "--check", "--diff", target],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- refusals and the plugin protocol ----------------------------------------------------------------


def test_streaming_rpcs_are_refused_with_the_rpc_named(tmp_path: Path) -> None:
    request = request_for(
        tmp_path,
        """
        syntax = "proto3";
        message M {}
        service Feed { rpc Watch(M) returns (stream M); }
        """,
    )
    response = generate(request)
    assert response.error == "x.proto: rpc Feed.Watch: streaming rpcs are not supported by eventmicro"
    assert not response.file


def test_rpcs_with_the_same_endpoint_are_refused(tmp_path: Path) -> None:
    request = request_for(
        tmp_path,
        """
        syntax = "proto3";
        message M {}
        service S { rpc GetIt(M) returns (M); rpc Get_It(M) returns (M); }
        """,
    )
    assert "rpc S.Get_It: another rpc of S is also named 'get_it'" in generate(request).error


def test_files_without_services_get_nothing_and_no_package_works(tmp_path: Path) -> None:
    empty = generate(request_for(tmp_path, 'syntax = "proto3";\nmessage M {}\n'))
    assert not empty.error
    assert not empty.file
    (tmp_path / "x.proto").unlink()
    response = generate(
        request_for(tmp_path, 'syntax = "proto3";\nmessage M {}\nservice S { rpc Go(M) returns (M); }\n')
    )
    [file] = response.file
    assert file.name == "x_micro.py"
    assert "import x_pb2\n" in file.content
    assert "request: x_pb2.M," in file.content
    assert response.supported_features == plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL


def test_plugin_reads_stdin_and_writes_stdout(tmp_path: Path) -> None:
    request = request_for(
        tmp_path, 'syntax = "proto3";\nmessage M {}\nservice S { rpc Go(M) returns (M); }\n'
    )
    result = subprocess.run(
        [BIN / "protoc-gen-eventmicro"], input=request.SerializeToString(), capture_output=True, check=True
    )
    assert plugin_pb2.CodeGeneratorResponse.FromString(result.stdout) == generate(request)


def test_checked_in_schema_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, ROOT / "scripts/gen_schemas.py", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
