"""Untrusted text in the terminal (issue 12, item 8): what ``eventmicro services``, ``tail``,
``call`` and ``deadletters`` print from NATS never drives the terminal.

Anyone connected may answer ``$SRV.PING/INFO/STATS``, publish events, answer a request or
store a dead letter. Here a foreign client does, over a real nats-server, with escape
sequences (clear screen, window title, C1 CSI), a bell, DEL, a fake newline and a right-to-left
override in every field; each CLI verb runs in its own process as a user runs it, and its
output must hold none of those characters raw — only their escaped, visible form.

``eventmicro docs --discover`` printed what services answered to ``$SRV.INFO`` with C1 controls,
DEL and bidi overrides raw (JSON and YAML alike); ``tail`` dropped data labelled JSON that is not
strict JSON without a word.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import unicodedata
import uuid
from asyncio.subprocess import Process
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from eventmicro import Connection, NatsServer
from eventmicro.service.deadletters import dead_letter_stream
from eventmicro.transport import jetstream
from eventmicro.transport.connection import Message

ROOT = Path(__file__).resolve().parents[2]
CLEAR = "\x1b[2J"
TITLE = "\x1b]0;owned\x07"
C1_CSI = "\x9b31m"
RLO = "\u202e"
HOSTILE = f"a{CLEAR}b{TITLE}c{C1_CSI}d{RLO}e\x7ff\nfake line\rg\x07"
BIDI = frozenset("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def assert_terminal_safe(output: bytes) -> str:
    """``output`` as text, once it is known to hold no raw control or bidi character."""
    text = output.decode("utf-8")  # a raw C1 byte would not even be UTF-8
    raw = sorted({c for c in text if c != "\n" and (unicodedata.category(c) == "Cc" or c in BIDI)})
    assert raw == [], f"raw control characters reached the terminal: {raw!r}"
    return text


async def spawn(url: str, *argv: str) -> Process:
    """``eventmicro COMMAND --url URL ARGS`` in its own process, as a user runs it."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventmicro", argv[0], "--url", url, *argv[1:],
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )  # fmt: skip


async def finished(process: Process) -> tuple[int, str, str]:
    """The exit code, stdout and stderr of ``process``, both checked for raw control characters."""
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert b"Traceback" not in out + err, err.decode(errors="replace")
    assert process.returncode is not None
    return process.returncode, assert_terminal_safe(out), assert_terminal_safe(err)


async def cli(url: str, *argv: str) -> tuple[int, str, str]:
    return await finished(await spawn(url, *argv))


def answering(
    conn: Connection, document: Callable[[str], dict[str, object]]
) -> Callable[[Message], Awaitable[None]]:
    """A ``$SRV`` responder callback: the JSON ``document(subject)`` to whoever asks."""

    async def answer(msg: Message) -> None:
        if msg.reply:
            await conn.publish(msg.reply, json.dumps(document(msg.subject)).encode())

    return answer


async def foreign_service(conn: Connection, name: str) -> None:
    """Two instances of a foreign service ``name`` answering ``$SRV`` with hostile text, the
    second also with fields of the wrong shape (a list that is a string, counters that are not
    objects)."""
    hostile_endpoint = {
        "name": f"e{CLEAR}",
        "subject": f"{name}.e{RLO}",
        "queue_group": f"q{TITLE}",
        "metadata": {"eventmicro.request": f"T{C1_CSI}", "eventmicro.reply": HOSTILE},
        "num_requests": 1,
        "num_errors": 1,
        "last_error": HOSTILE,
    }

    def info(instance: str, shapes: bool) -> Callable[[str], dict[str, object]]:
        def document(subject: str) -> dict[str, object]:
            verb = subject.split(".")[1]
            base: dict[str, object] = {
                "type": f"io.nats.micro.v1.{verb.lower()}_response",
                "name": name,
                "id": f"{instance}{C1_CSI}",
                "version": f"1.0.0{RLO}",
                "description": HOSTILE,
                "metadata": 5 if shapes else {f"k{CLEAR}": HOSTILE, "eventmicro.subscribes": HOSTILE},
                "endpoints": "not a list" if shapes else [hostile_endpoint],
            }
            if verb == "STATS":
                base["data"] = {
                    "events": {f"h{CLEAR}": 7 if shapes else {"received": 2, "last_error": HOSTILE}}
                }
            return base

        return document

    for instance, shapes in (("one", False), ("two", True)):
        for verb in ("PING", "INFO", "STATS"):
            callback = answering(conn, info(instance, shapes))
            for subject in (f"$SRV.{verb}", f"$SRV.{verb}.{name}"):
                await conn.subscribe(subject, callback)
    await conn.flush()


async def test_services_ls_info_and_stats_escape_what_a_foreign_responder_answers(
    nats_server: NatsServer, conn: Connection
) -> None:
    name = f"evil{uuid.uuid4().hex[:8]}"
    await foreign_service(conn, name)
    url = nats_server.url
    visible = "a\\x1b[2Jb\\x1b]0;owned\\x07c\\x9b31md\\u202ee\\x7ff\\nfake line\\rg\\x07"

    code, out, _ = await cli(url, "services", "ls", name)
    assert code == 0
    assert visible in out  # the description, on its own row
    assert out.count("\n") == 2  # the header and one row: the description's newline made none

    code, out, _ = await cli(url, "services", "info", name)
    assert code == 0
    assert f"{name} 1.0.0\\u202e  (2 instance(s))  {visible}" in out
    assert "  e\\x1b[2J" in out  # the endpoint's name, in the table
    assert f"  k\\x1b[2J: {visible}" in out  # service metadata
    assert "instances: one\\x9b31m, two\\x9b31m" in out

    code, out, _ = await cli(url, "services", "stats", name)
    assert code == 0
    assert "h\\x1b[2J (events)" in out
    assert "\\u202e" in out

    code, out, _ = await cli(url, "services", "info", name, "--json")
    assert code == 0
    answers = [json.loads(line) for line in out.splitlines()]
    assert {answer["description"] for answer in answers} == {HOSTILE}  # the same text, escaped


async def test_tail_escapes_attributes_data_and_messages_that_are_not_cloudevents(
    nats_server: NatsServer, conn: Connection
) -> None:
    prefix = f"eviltail{uuid.uuid4().hex[:8]}"
    structured = {
        "specversion": "1.0",
        "id": "s-1",
        "source": "/evil",
        "type": f"com.evil{RLO}",
        "subject": f"x{RLO}y",
        "datacontenttype": "text/plain",
        "data": HOSTILE,
    }
    binary = {
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/evil%E2%80%AE",
        "ce-type": "com.evil.json",
    }
    messages = [
        ("structured", json.dumps(structured).encode(), {"content-type": "application/cloudevents+json"}),
        ("json", json.dumps({"text": HOSTILE}).encode(), {**binary, "content-type": "application/json"}),
        ("rawheader", b"{}", {**binary, "ce-source": CLEAR}),  # not a valid attribute: no CloudEvent
        ("plain", HOSTILE.encode(), {"content-type": "text/plain"}),
    ]
    for as_json in (False, True):
        argv = ["tail", f"{prefix}.>", "--count", str(len(messages)), *(["--json"] if as_json else [])]
        tail = await spawn(nats_server.url, *argv)
        assert tail.stderr is not None
        listening = await asyncio.wait_for(tail.stderr.readline(), 60)  # once it is subscribed
        assert listening.startswith(b"listening on"), listening
        for suffix, body, headers in messages:
            await conn.publish(f"{prefix}.{suffix}", body, headers=headers)
        code, out, _ = await finished(tail)
        assert code == 0
        if as_json:
            lines = {
                str(line["nats_subject"]).rsplit(".", 1)[1]: line
                for line in map(json.loads, out.splitlines())
            }
            assert lines["structured"]["data"] == HOSTILE  # still the same text once parsed
            assert lines["structured"]["type"] == f"com.evil{RLO}"
            assert lines["json"]["data"] == {"text": HOSTILE}
            assert lines["plain"]["data"] == HOSTILE
        else:
            assert "com.evil\\u202e" in out  # the type, in the header line
            assert "  a\\x1b[2Jb\\x1b]0;owned\\x07c\\x9b31md\\u202ee\\x7ff" in out  # text data, line 1
            assert "  fake line\\rg\\x07" in out  # its second line, indented like the first
            assert "source=/evil\\u202e" in out
            assert '"text": "a\\u001b[2Jb' in out  # JSON data stays JSON
            assert "\\u009b31m" in out


async def test_call_escapes_a_foreign_services_reply_and_error(
    nats_server: NatsServer, conn: Connection
) -> None:
    name = f"evilcall{uuid.uuid4().hex[:8]}"
    info: dict[str, object] = {
        "type": "io.nats.micro.v1.info_response", "name": name, "id": "i-1", "version": "1.0.0",
        "endpoints": [{"name": verb, "subject": f"{name}.{verb}"} for verb in ("echo", "fail")],
    }  # fmt: skip
    await conn.subscribe(f"$SRV.INFO.{name}", answering(conn, lambda _: info))

    async def echo(msg: Message) -> None:
        assert msg.reply
        headers = {"ce-specversion": "1.0", "ce-id": "r-1", "ce-source": "/evil", "ce-type": "com.evil.reply",
                   "content-type": "application/json"}  # fmt: skip
        await conn.publish(msg.reply, json.dumps({"text": HOSTILE}).encode(), headers=headers)

    async def fail(msg: Message) -> None:
        assert msg.reply
        headers = {"Nats-Service-Error": f"bad{CLEAR}{RLO}", "Nats-Service-Error-Code": "400"}
        await conn.publish(msg.reply, b"", headers=headers)

    await conn.subscribe(f"{name}.echo", echo)
    await conn.subscribe(f"{name}.fail", fail)
    await conn.flush()

    code, out, _ = await cli(nats_server.url, "call", f"{name}.echo", "{}")
    assert code == 0
    assert json.loads(out) == {"text": HOSTILE}
    assert "\\u009b31m" in out
    assert "\\u202e" in out

    code, _, err = await cli(nats_server.url, "call", f"{name}.fail", "{}")
    assert code == 1
    assert "bad\\x1b[2J\\u202e" in err


async def test_deadletters_ls_and_show_escape_a_stored_dead_letter(
    nats_server: NatsServer, conn: Connection
) -> None:
    service = f"evildlq{uuid.uuid4().hex[:8]}"
    await jetstream.ensure_stream(conn, dead_letter_stream(), adopt=True)
    headers = {
        "ce-specversion": "1.0", "ce-id": "d-1", "ce-source": "/evil", "ce-type": "com.evil",
        "content-type": "text/plain", "ce-dlqcode": "500", "ce-dlqreason": "boom%E2%80%AEmoob",
        "ce-dlqdeliveries": "1", "ce-dlqservice": service, "ce-dlqhandler": "h",
        "ce-dlqsubject": "events.x", "ce-dlqstream": "X", "ce-dlqsequence": "1", "x-evil": CLEAR,
    }  # fmt: skip
    stored = await jetstream.publish(
        conn, f"deadletter.{service}.h", HOSTILE.encode(), headers, msg_id=service, timeout=5
    )

    code, out, err = await cli(nats_server.url, "deadletters", "ls", service)
    assert code == 0, err
    assert "boom\\u202emoob" in out

    code, out, _ = await cli(nats_server.url, "deadletters", "show", str(stored.seq))
    assert code == 0
    assert "  x-evil: \\x1b[2J" in out
    assert "\\x1b[2J" in out

    code, out, _ = await cli(nats_server.url, "deadletters", "show", str(stored.seq), "--json")
    assert code == 0
    assert json.loads(out)["headers"]["x-evil"] == CLEAR


async def test_docs_discover_prints_what_services_answer_escaped(
    nats_server: NatsServer, nats_connection: Connection
) -> None:
    """A foreign responder answers $SRV.INFO with escape sequences in its description, metadata
    and endpoints; the AsyncAPI document on stdout holds none of them raw, and reads back
    (JSON and YAML) with the same text."""
    name = f"evil{uuid.uuid4().hex[:8]}"
    info = {
        "type": "io.nats.micro.v1.info_response",
        "name": name,
        "id": "one",
        "version": "1.0.0",
        "description": HOSTILE,
        "metadata": {f"k{HOSTILE}": HOSTILE, "eventmicro.subscribes": HOSTILE},
        "endpoints": [{"name": "e", "subject": f"{name}.e", "metadata": {"eventmicro.reply": HOSTILE}}],
    }

    async def answer(msg: Message) -> None:
        if msg.reply:
            await nats_connection.publish(msg.reply, json.dumps(info).encode())

    for subject in ("$SRV.INFO", f"$SRV.INFO.{name}"):
        await nats_connection.subscribe(subject, answer)
    await nats_connection.flush()
    for form, read in (("json", json.loads), ("yaml", yaml.safe_load)):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventmicro", "docs", "--discover", "--url", nats_server.url,
            "--format", form, name,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode(errors="replace")
        text = out.decode("utf-8")
        raw = sorted({c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf")})
        assert raw == [], f"{form}: raw control characters reached the terminal: {raw!r}"
        document = read(text)
        assert document["info"]["description"].startswith(HOSTILE), form


async def test_tail_shows_event_data_that_is_not_strict_json_as_bytes_never_drops_it(
    nats_server: NatsServer, nats_connection: Connection
) -> None:
    """Data labelled JSON that nests 100,000 deep was dropped without a word (the reader raised
    in the handler); NaN and a duplicate member name passed for JSON (the last one shown). Each
    is now shown, as the bytes it is, and the next event follows."""
    prefix = f"rawtail{uuid.uuid4().hex[:8]}"
    headers = {
        "ce-specversion": "1.0",
        "ce-source": "/x",
        "ce-type": "com.x",
        "content-type": "application/json",
    }
    bodies = {
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "nan": b"NaN",
        "twice": b'{"a": 1, "a": 2}',
        "ok": b"{}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventmicro", "tail", "--url", nats_server.url, f"{prefix}.>",
        "--count", str(len(bodies)), "--json",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    listening = await asyncio.wait_for(process.stderr.readline(), 60)  # once it is subscribed
    assert listening.startswith(b"listening on"), listening
    for name, body in bodies.items():
        await nats_connection.publish(f"{prefix}.{name}", body, headers={**headers, "ce-id": name})
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode(errors="replace")
    shown = {line["id"]: line for line in map(json.loads, out.splitlines())}
    assert list(shown) == list(bodies)
    for name in ("deep", "nan", "twice"):
        assert "data" not in shown[name]
        assert base64.b64decode(shown[name]["data_base64"]) == bodies[name]
    assert shown["ok"]["data"] == {}
