"""The ``farebox`` command: serve, fake-upstream, budget, (in ``proxy.cli.reports``) usage,
forecast and events export, and (in ``proxy.cli.record``) the usage of record in PostgreSQL.

Every command reads the same settings (flags, ``FAREBOX_*`` / ``REDIS_URL``, ``--config``).
The budget and reading commands reach the ledger the running proxy uses, through its admin API
(``--url``), its Redis, or its embedded Redis's data directory, or refuse: see
``proxy.cli.target``. A bad setting, bad input or a refusal prints one line and exits with
status 2; "no such budget" and a failure of the other side exit with status 1. A closed
standard output (``| head``) ends the command quietly with status 141, as SIGPIPE would.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from proxy.cli import keys as cli_keys
from proxy.cli import record as cli_record
from proxy.cli import reports as cli_reports
from proxy.cli import target
from proxy.cli.source import EXIT_FAILURE, EXIT_USAGE, CommandError, Source
from proxy.cli.target import Runner
from proxy.errors import FareboxError
from proxy.settings import Settings, SettingsError, load_settings

__all__ = ["main"]

EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a command ended by SIGPIPE


def _store_flags(parser: argparse.ArgumentParser) -> None:
    """Options every Redis-using command shares."""
    parser.add_argument("--config", help="settings file (TOML or JSON)")
    parser.add_argument("--redis-url", help="Redis URL (default: embedded Redis under --data-dir)")
    parser.add_argument("--redis-cluster", action="store_const", const=True,
                        help="--redis-url names a node of a Redis Cluster (as redis+cluster://host:port does)")
    parser.add_argument("--data-dir", help="directory of the embedded Redis's data (default ./.farebox)")
    parser.add_argument("--redis-prefix", help="prefix of every Redis key (default fb)")


def _ledger_flags(parser: argparse.ArgumentParser) -> None:
    """Options of the budget and reading commands: the ledger directly, or the proxy's admin API."""
    _store_flags(parser)
    parser.add_argument("--url", help="the running proxy's address, e.g. http://127.0.0.1:8080: use its admin API "
                                      "(env FAREBOX_URL)")
    parser.add_argument("--admin-token", help="the proxy's admin token, with --url (env FAREBOX_ADMIN_TOKEN)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="farebox", description="OpenAI-compatible metering proxy with hard budgets.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the proxy")
    _store_flags(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--workers", type=int, help="processes sharing the port (default 1)")
    serve.add_argument("--upstream", help="provider base URL (default https://api.openai.com/v1)")
    serve.add_argument("--upstream-api-key", help="API key sent upstream instead of the client's")
    serve.add_argument("--anthropic-upstream",
                       help="Anthropic API base URL for /v1/messages (default https://api.anthropic.com)")
    serve.add_argument("--anthropic-api-key", help="Anthropic API key sent upstream instead of the client's")
    serve.add_argument("--admin-token", help="bearer token of the admin API (unset: admin API disabled)")
    serve.add_argument("--admin-read-token", help="bearer token of the admin API's GET routes only")
    serve.add_argument("--auth", choices=["passthrough", "keys"],
                       help="passthrough (default): requests without a farebox key are attributed by headers; "
                            "keys: every request needs a farebox key")
    serve.add_argument("--default-project", help="project for requests without the project header")
    serve.add_argument("--fail-mode", choices=["closed", "open"], help="when Redis is unreachable (default closed)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--smtp-url", help="SMTP server for alert e-mails: smtp://host:25, smtp+starttls://user:pass@host, "
                                          "smtps://user:pass@host (env FAREBOX_SMTP_URL)")
    serve.add_argument("--postgres-url", help="PostgreSQL URL of the usage of record: events drained there "
                                              "(env FAREBOX_POSTGRES_URL; unset: none)")

    fake = sub.add_parser("fake-upstream", help="run a deterministic OpenAI-compatible server for trying farebox")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=9000)
    fake.add_argument("--latency-ms", type=float, default=0.0, help="delay before each response starts")
    fake.add_argument("--chunks", type=int, default=8, help="content chunks per streamed reply")
    fake.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between streamed chunks")
    fake.add_argument("--reply-tokens", type=int, default=16, help="tokens per reply (capped by max_tokens)")

    keyid = sub.add_parser("key-id", help="print the key id farebox records for an API key (read from stdin)")
    keyid.add_argument("--project", help="print the budget id PROJECT/KEY_ID for `farebox budget set key ...`")

    cli_reports.add_commands(sub, _ledger_flags)
    cli_keys.add_commands(sub, _ledger_flags)
    cli_record.add_commands(sub, _store_flags)

    budget = sub.add_parser("budget", help="set, show, list or delete budgets")
    bsub = budget.add_subparsers(dest="action", required=True, metavar="ACTION")
    bset = bsub.add_parser("set", help="create or replace a budget")
    bset.add_argument("scope")
    bset.add_argument("id")
    bset.add_argument("limit_usd", help="limit in USD, e.g. 50 or 12.50")
    bset.add_argument("--period", default="month", help="hour, day, week, month or total (default month)")
    bset.add_argument("--mode", default="hard", help="hard (402) or soft (alerts only); default hard")
    bset.add_argument("--thresholds", help="alert thresholds, comma-separated fractions (default 0.5,0.8,0.9,1.0)")
    bset.add_argument("--emails", help="addresses to e-mail alerts to, comma-separated (needs smtp_url on the proxy)")
    for name in ("show", "delete"):
        b = bsub.add_parser(name, help=f"{name} a budget")
        b.add_argument("scope")
        b.add_argument("id")
    blist = bsub.add_parser("list", help="list budgets")
    blist.add_argument("--scope")
    for b in (bset, blist, *[bsub.choices[n] for n in ("show", "delete")]):
        _ledger_flags(b)
        b.add_argument("--json", action="store_true", help="print the same JSON as the admin API")
    return p


def _settings(args: argparse.Namespace, keys: Sequence[str]) -> Settings:
    flags = {k: getattr(args, k, None) for k in keys}
    return load_settings(flags)


_STORE_KEYS = ("config", "redis_url", "redis_cluster", "data_dir", "redis_prefix")
_LEDGER_KEYS = _STORE_KEYS + ("admin_token",)
_SERVE_KEYS = _STORE_KEYS + ("host", "port", "workers", "upstream", "upstream_api_key", "anthropic_upstream",
                             "anthropic_api_key", "admin_token", "admin_read_token", "auth",
                             "default_project", "fail_mode", "log_level", "smtp_url", "postgres_url")


def _runner(args: argparse.Namespace) -> Runner:
    url = target.admin_url(args.url)
    if url:
        given = [f for f, k in (("--redis-url", "redis_url"), ("--redis-cluster", "redis_cluster"),
                                ("--data-dir", "data_dir"), ("--redis-prefix", "redis_prefix")) if getattr(args, k, None)]
        if given:
            raise CommandError(f"{', '.join(given)} cannot be used with --url / FAREBOX_URL: the proxy at the URL "
                               "reads its own ledger")
    return target.runner(_settings(args, _LEDGER_KEYS), url)


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _print_budget(status: dict[str, Any]) -> None:
    resets = status.get("resets_at") or "never"
    print(f"{status['scope']} {status['id']}: {status['mode']} {status['period']} limit ${status['limit_usd']}, "
          f"spent ${status['spent_usd']}, reserved ${status['reserved_usd']}, remaining ${status['remaining_usd']} "
          f"({status['percent']}%), resets {resets}"
          + (f"; alerts e-mailed to {', '.join(status['alert_emails'])}" if status.get("alert_emails") else ""))


def _run_budget(args: argparse.Namespace, run: Runner) -> int:
    body: dict[str, Any] = {}
    if args.action == "set":
        body = {"limit_usd": args.limit_usd, "period": args.period, "mode": args.mode}
        if args.thresholds:
            try:
                body["alert_thresholds"] = [float(x) for x in args.thresholds.split(",") if x.strip()]
            except ValueError:
                raise SettingsError(f"invalid --thresholds {args.thresholds!r}: comma-separated fractions such as 0.5,0.8,1") from None
        if args.emails:
            body["alert_emails"] = [a.strip() for a in args.emails.split(",") if a.strip()]

    async def act(source: Source) -> Any:
        if args.action == "set":
            return await source.set_budget(args.scope, args.id, body)
        if args.action == "show":
            return await source.get_budget(args.scope, args.id)
        if args.action == "delete":
            return await source.delete_budget(args.scope, args.id)
        return await source.list_budgets(args.scope)

    result = run(act)
    if args.action in ("show", "delete") and not result:
        print(f"farebox: no budget for {args.scope} '{args.id}'", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        _print_json({"budgets": result} if args.action == "list"
                    else {"deleted": True, "scope": args.scope, "id": args.id} if args.action == "delete"
                    else result)
    elif args.action == "list":
        for status in result:
            _print_budget(status)
        if not result:
            print("no budgets")
    elif args.action == "delete":
        print(f"deleted budget {args.scope} {args.id}")
    else:
        _print_budget(result)
    return 0


def _run_key_id(args: argparse.Namespace) -> int:
    from proxy.attribute import key_fingerprint  # noqa: PLC0415

    key = sys.stdin.readline().strip()
    key_id = key_fingerprint(key if key.startswith("Bearer ") else f"Bearer {key}")
    if key_id is None:
        print("farebox: no key on stdin (pipe it in: echo \"$OPENAI_API_KEY\" | farebox key-id)", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.project}/{key_id}" if args.project else key_id)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status = _main(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:
        # The reader went away (`farebox usage ... | head -2`): stop quietly. Standard output
        # is pointed at /dev/null so the interpreter's last flush has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _main(args: argparse.Namespace) -> int:
    try:
        if args.command == "fake-upstream":
            from proxy.fake_upstream import run_fake_upstream  # noqa: PLC0415

            run_fake_upstream(host=args.host, port=args.port, latency_ms=args.latency_ms, chunks=args.chunks,
                              chunk_delay_ms=args.chunk_delay_ms, reply_tokens=args.reply_tokens)
            return 0
        if args.command == "key-id":
            return _run_key_id(args)
        if args.command == "serve":
            from proxy.cli.serve import serve  # noqa: PLC0415

            return serve(_settings(args, _SERVE_KEYS))
        if args.command in cli_record.COMMANDS:
            return cli_record.run(args, _settings(args, cli_record.SETTING_KEYS))
        run = _runner(args)
        if args.command == "key":
            return cli_keys.run(args, run)
        if args.command == "limit":
            return cli_keys.run_limit(args, run)
        if args.command in cli_reports.COMMANDS:
            return cli_reports.run(args, run)
        return _run_budget(args, run)
    except SettingsError as exc:
        print(f"farebox: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"farebox: {exc.message}", file=sys.stderr)
        return exc.status
    except FareboxError as exc:
        print(f"farebox: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if exc.status == 400 else EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
