"""``farebox key create|list|show|revoke|rotate``: farebox keys, and ``farebox limit
set|show|delete project|key ID``: rate limits, on the ledger or through the running proxy's
admin API. ``create`` and ``rotate`` print the secret alone on standard output
(``KEY=$(farebox key create acme)``) and what it is on standard error; ``--json`` prints the
admin API's JSON instead. The secret is shown this once: farebox keeps only its hash."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import orjson

from proxy.cli.source import Source
from proxy.cli.target import Runner

__all__ = ["add_commands", "run", "run_limit"]


def add_commands(sub: Any, ledger_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    key = sub.add_parser("key", help="create, list, show, revoke or rotate farebox keys")
    ksub = key.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = ksub.add_parser("create", help="issue a key bound to a project (the secret is printed once)")
    create.add_argument("project")
    create.add_argument("--agent", help="pin the key to this agent")
    create.add_argument("--name", help="a name for people")
    create.add_argument("--expires-in", help="lifetime such as 90s, 15m, 12h or 30d (default: never expires)")
    create.add_argument("--models", help="models it may use: names or glob patterns, comma-separated "
                                         "(default: every model)")
    create.add_argument("--rpm", type=int, help="requests per minute (stored with the key)")
    create.add_argument("--tpm", type=int, help="tokens per minute (stored with the key)")
    listing = ksub.add_parser("list", help="list a project's keys")
    listing.add_argument("project")
    others = [ksub.add_parser(name, help=text) for name, text in (
        ("show", "show a key"), ("revoke", "stop a key for good"),
        ("rotate", "give a key a new secret (the old one stops working)"))]
    for parser in others:
        parser.add_argument("id", help="the key's id, e.g. key_0123456789abcdef")
    for parser in (create, listing, *others):
        ledger_flags(parser)
        parser.add_argument("--json", action="store_true", help="print the same JSON as the admin API")

    limit = sub.add_parser("limit", help="set, show or delete the rate limits of a project or a farebox key")
    lsub = limit.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions = [lsub.add_parser(name, help=text) for name, text in (
        ("set", "replace the limits (a kind left out: no limit of that kind)"), ("show", "show the limits"),
        ("delete", "remove both limits"))]
    for parser in actions:
        parser.add_argument("scope", choices=["project", "key"])
        parser.add_argument("id", help="the project id, or the key's id (key_0123456789abcdef)")
        if parser.prog.endswith(" set"):
            parser.add_argument("--rpm", type=int, help="requests per minute")
            parser.add_argument("--tpm", type=int, help="tokens per minute (each request counts its worst case "
                                                        "until it finishes, then what it used)")
        ledger_flags(parser)
        parser.add_argument("--json", action="store_true", help="print the same JSON as the admin API")


def _create_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"project": args.project}
    for name in ("agent", "name", "rpm", "tpm", "expires_in"):
        value = getattr(args, name)
        if value is not None:
            body[name] = value
    if args.models is not None:
        body["models"] = [p.strip() for p in args.models.split(",") if p.strip()]
    return body


def _line(view: dict[str, Any]) -> str:
    models = ",".join(view["models"]) if view["models"] else "any"
    rates = "".join(f" {name} {view[name]}" for name in ("rpm", "tpm") if view[name] is not None)
    return (f"{view['id']} project {view['project']} agent {view['agent'] or '-'} "
            f"name {view['name'] or '-'} models {models}{rates} expires {view['expires_at'] or 'never'} "
            f"{view.get('state', 'active')}")


def run(args: argparse.Namespace, run_on: Runner) -> int:
    async def act(source: Source) -> Any:
        if args.action == "create":
            return await source.create_key(_create_body(args))
        if args.action == "list":
            return await source.list_keys(args.project)
        if args.action == "show":
            return await source.show_key(args.id)
        if args.action == "revoke":
            return await source.revoke_key(args.id)
        return await source.rotate_key(args.id)

    result = run_on(act)
    if args.json:
        data = {"keys": result} if args.action == "list" else result
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.action in ("create", "rotate"):
        sys.stdout.write(result["key"] + "\n")
        verb = "created" if args.action == "create" else "rotated"
        print(f"{verb} {_line({**result, 'state': 'active'})}\nthe secret above is shown only this once: "
              "farebox keeps only its hash", file=sys.stderr)
    elif args.action == "list":
        for view in result:
            print(_line(view))
        if not result:
            print("no keys")
    else:
        print(("revoked " if args.action == "revoke" else "") + _line(result))
    return 0


def run_limit(args: argparse.Namespace, run_on: Runner) -> int:
    async def act(source: Source) -> Any:
        if args.action == "set":
            return await source.set_limits(args.scope, args.id, {"rpm": args.rpm, "tpm": args.tpm})
        if args.action == "show":
            return await source.show_limits(args.scope, args.id)
        return await source.delete_limits(args.scope, args.id)

    view = run_on(act)
    if args.json:
        sys.stdout.write(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        rates = " ".join(f"{name} {view[name] if view[name] is not None else 'none'}" for name in ("rpm", "tpm"))
        print(f"{view['scope']} {view['id']} {rates}")
    return 0
