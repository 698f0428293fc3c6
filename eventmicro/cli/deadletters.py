"""``eventmicro deadletters``: list, show, replay and purge dead letters over NATS.

A dead letter holds what anyone published (headers, body) and the failure text of a handler:
everything is printed through `printable` / `json_text`, control characters as escapes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from typing import Any

from eventmicro.cli.common import Subparsers, connect_options
from eventmicro.cli.text import json_text, printable
from eventmicro.service.deadletters import DeadLetter, DeadLetters
from eventmicro.transport.connection import Connection
from eventmicro.wire import strictjson as strict_json

EXAMPLES = """examples:
  eventmicro deadletters ls                         # every dead letter, oldest first
  eventmicro deadletters ls billing charge --json   # one handler's, as JSON lines
  eventmicro deadletters show 12                    # headers, failure and body of one
  eventmicro deadletters replay 12 13               # back to their original subjects
  eventmicro deadletters replay --all billing       # every dead letter of a service
  eventmicro deadletters purge billing --yes        # drop them

NATS: --url, or EVENTMICRO_NATS_URL / NATS_URL and the other EVENTMICRO_NATS_* variables.
"""


def register(subparsers: Subparsers) -> None:
    """Add ``deadletters`` to the ``eventmicro`` parser."""
    parser = subparsers.add_parser(
        "deadletters",
        help="list, show, replay and purge dead letters",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default=None, help="NATS URL (default: from the environment)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("ls", help="list dead letters, oldest first")
    ls.add_argument("service", nargs="?")
    ls.add_argument("handler", nargs="?")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = verbs.add_parser("show", help="one dead letter in full")
    show.add_argument("seq", type=int)
    show.add_argument("--json", action="store_true")
    replay = verbs.add_parser("replay", help="publish dead letters again to their original subjects")
    replay.add_argument("seq", nargs="*", help="sequence numbers; with --all: [SERVICE [HANDLER]]")
    replay.add_argument("--all", action="store_true", help="replay every dead letter (of SERVICE [HANDLER])")
    replay.add_argument("--service")
    replay.add_argument("--handler")
    purge = verbs.add_parser("purge", help="delete dead letters")
    purge.add_argument("service", nargs="?")
    purge.add_argument("handler", nargs="?")
    purge.add_argument("--yes", action="store_true", help="really delete")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    async with Connection(connect_options(args)) as connection:
        dead = DeadLetters(connection)
        verb: str = args.verb
        if verb == "ls":
            return await _ls(dead, args)
        if verb == "show":
            return await _show(dead, args)
        if verb == "replay":
            return await _replay(dead, args)
        return await _purge(dead, args)


async def _ls(dead: DeadLetters, args: argparse.Namespace) -> int:
    letters = await dead.list(args.service, args.handler)
    if args.json:
        for letter in letters:
            print(json_text(_summary(letter)))
        return 0
    if not letters:
        print("no dead letters")
        return 0
    rows = [("SEQ", "HANDLER", "CODE", "TRIES", "TYPE", "REASON", "STORED")]
    for d in letters:
        stored = d.time.strftime("%Y-%m-%d %H:%M:%S") if d.time else "-"
        rows.append((str(d.seq), f"{d.service}.{d.handler}", str(d.code), str(d.deliveries),
                     d.event_type or "-", _clip(d.reason, 40), stored))  # fmt: skip
    cells = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


async def _show(dead: DeadLetters, args: argparse.Namespace) -> int:
    letter = await dead.get(args.seq)
    if letter is None:
        print(f"eventmicro: no dead letter {args.seq}")
        return 1
    document = {**_summary(letter), "headers": dict(letter.headers), **_body(letter.data)}
    if args.json:
        print(json_text(document))
    else:
        for key, value in document.items():
            if isinstance(value, dict):
                print(f"{key}:")
                for name, text in value.items():
                    print(f"  {printable(name)}: {printable(text)}")
            else:
                print(f"{key}: {printable(value)}")
    return 0


async def _replay(dead: DeadLetters, args: argparse.Namespace) -> int:
    if args.all:
        if len(args.seq) > 2:
            print("eventmicro: replay --all takes at most SERVICE and HANDLER")
            return 2
        service, handler = ([*args.seq, None, None])[:2]
        count = await dead.replay_all(service or args.service, handler or args.handler)
        print(f"replayed {count} dead letter(s)")
        return 0
    if not args.seq:
        print("eventmicro: give the sequence numbers to replay, or --all")
        return 2
    if not all(text.isdigit() for text in args.seq):
        print("eventmicro: dead letters are replayed by sequence number (or --all [SERVICE [HANDLER]])")
        return 2
    missing = 0
    for seq in map(int, args.seq):
        try:
            stored = await dead.replay(seq)
        except KeyError as exc:  # none, or its body is neither kept nor in the original stream
            print(f"eventmicro: {printable(exc.args[0])}")
            missing += 1
            continue
        print(f"replayed {seq} -> stream {stored.stream} seq {stored.seq}")
        for note in stored.lost:
            print(f"  not restored: {printable(note)}")
    return 1 if missing else 0


async def _purge(dead: DeadLetters, args: argparse.Namespace) -> int:
    scope = ".".join(p for p in (args.service, args.handler) if p) or "every service"
    if not args.yes:
        print(f"eventmicro: this deletes the dead letters of {scope}; add --yes to do it")
        return 2
    await dead.purge(args.service, args.handler)
    print(f"purged the dead letters of {scope}")
    return 0


def _summary(letter: DeadLetter) -> dict[str, Any]:
    return {
        "seq": letter.seq,
        "service": letter.service,
        "handler": letter.handler,
        "code": letter.code,
        "reason": letter.reason,
        "deliveries": letter.deliveries,
        "subject": letter.subject,
        "stream": letter.stream,
        "stream_seq": letter.stream_seq,
        "event_id": letter.event_id,
        "event_type": letter.event_type,
        "stored": letter.time.isoformat() if letter.time else None,
        **({"body_dropped": True} if letter.body_dropped else {}),  # the original stream has it
        **({"headers_truncated": True} if letter.headers_truncated else {}),
    }


def _body(data: bytes) -> dict[str, Any]:
    try:
        return {"body": strict_json.loads(data)}  # strict: a deep body never raises
    except strict_json.JSONError:
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(data).decode("ascii"), "body_bytes": len(data)}
    if text.isprintable():
        return {"body": text}
    return {"body_base64": base64.b64encode(data).decode("ascii"), "body_bytes": len(data)}


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
