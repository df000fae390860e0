"""`intent stack up|down|status|env`: the production topology on this machine (docs/production.md)."""

from __future__ import annotations

import shlex

from serving.project import intent_home


def register(subparsers) -> None:
    stack = subparsers.add_parser(
        "stack", help="the production topology on loopback: Dagster on Postgres, Spark "
                      "standalone, Redis cluster, moto, the inference container")
    stack.add_argument("action", choices=["up", "down", "status", "env"])
    stack.add_argument("--database", default="intent_stack",
                       help="Dagster's Postgres database (created when missing)")
    stack.add_argument("--online-store", choices=["cluster", "single"], default="cluster",
                       help="REDIS_URL: the Redis cluster (the default), or a single Redis beside it")
    stack.add_argument("--drop-database", action="store_true",
                       help="down: also drop the Dagster database")
    stack.set_defaults(handler=_stack)


def _stack(args) -> int:
    from intent_resources.stack import StackError
    from intent_resources.stack_processes import StackPartError
    from intent_resources.stack_up import down, env_file, stack_settings, status, up

    home = intent_home()
    try:
        if args.action == "up":
            print(f"intent stack up (state under {home / 'stack'})")
            settings = up(home, args.database, args.online_store)
            print(f"up. Dagster UI: {settings['DAGSTER_UI_URL']}; prod settings: "
                  f"source {env_file(home)}")
        elif args.action == "down":
            stopped = down(home, args.drop_database)
            print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        elif args.action == "status":
            rows = status(home)
            if not rows:
                print(f"no stack under {home / 'stack'}")
                return 3
            for name, alive, address, note in rows:
                print(f"{name:<22} {'up' if alive else 'DOWN':<5} {address}"
                      + (f"  ({note})" if note else ""))
            return 0 if all(alive for _, alive, _, _ in rows) else 3
        else:
            settings = stack_settings(home)
            if not settings:
                print(f"intent stack env: no stack runs under {home}")
                return 3
            for name, value in sorted(settings.items()):
                print(f"export {name}={shlex.quote(value)}")
    except (StackError, StackPartError) as error:
        print(f"intent stack {args.action}: error: {error}")
        return 1
    return 0
