"""`decodiff cache list` / `prune`: what the run cache holds, and taking back its space."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

from decodiff.harness.commands.common import add_actions, add_json_arg, print_json
from decodiff.harness.config import Config

HELP = "what the run cache holds; prune it"
DESCRIPTION = (
    "The run cache (run.cache_dir) keeps what runs build once and reuse: demo data, shards, VAEs, latent "
    "caches, trained models, test sets' references, validation splits. Every entry is keyed by what made "
    "it, so none is stale, but they pile up. `list` shows them with sizes and when a run last built or "
    "read each; `prune` removes the chosen ones, skipping any a run is building."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = add_actions(p, "cache_command")
    default = Config().run.cache_dir
    for name, help_, desc in (
        ("list", "entries with size and last use", "Every entry of the cache with its size, files and last use."),
        (
            "prune",
            "remove entries by kind and age",
            "Remove the entries of the given kinds not built or used for --older-than (or --all of them). "
            "An entry a run is building (its lock held) is skipped and named; an entry is renamed away before "
            "it is deleted, so a run never reads half of one (it builds it again).",
        ),
    ):
        a = actions.add_parser(name, help=help_, description=desc)
        a.add_argument("--cache-dir", default=default, help=f"the cache folder (run.cache_dir; default {default})")
        a.add_argument(
            "--kind",
            action="append",
            metavar="KIND",
            help="only this kind (repeatable): models, latents, references, vae, shards, validation, demo, budgets",
        )
        add_json_arg(a)
        if name == "prune":
            a.add_argument("--older-than", metavar="AGE", help="not built or used for AGE: 30d, 12h, 90m, 2w")
            a.add_argument("--all", action="store_true", help="every entry of the kinds, whatever its age")
            a.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
        a.set_defaults(func=run_list if name == "list" else run_prune)


def run_list(args: argparse.Namespace) -> int:
    from decodiff.harness.caches import KINDS, entries_word, human_age, human_bytes, list_cache

    entries = list_cache(args.cache_dir, args.kind)
    if args.json:
        kinds = {k.name: k.what for k in KINDS}
        print_json({"cache_dir": args.cache_dir, "kinds": kinds, "entries": [asdict(e) for e in entries]})
        return 0
    now = time.time()
    print(f"{'kind':<11} {'entry':<34} {'size':>9} {'files':>6} {'last used':>9}  state / what")
    totals: dict[str, int] = {}
    for e in entries:
        totals[e.kind] = totals.get(e.kind, 0) + e.bytes
        what = e.state + (f": {e.note}" if e.note else "")
        print(
            f"{e.kind:<11} {e.name:<34} {human_bytes(e.bytes):>9} {e.files:>6} {human_age(e.age_days(now)):>9}  {what}"
        )
    print(
        f"{entries_word(len(entries))}, {human_bytes(sum(totals.values()))} in {args.cache_dir}"
        + (f" ({', '.join(f'{k} {human_bytes(v)}' for k, v in totals.items())})" if totals else "")
    )
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from decodiff.harness.caches import entries_word, human_bytes, parse_age, prune_cache
    from decodiff.harness.errors import UsageError
    from decodiff.harness.progress import log

    if (args.older_than is None) == (not args.all):
        raise UsageError(
            "cache prune: give --older-than AGE (entries no run used for that long) or --all (every entry of "
            "the kinds), one of them"
        )
    age = parse_age(args.older_than) if args.older_than is not None else None
    result = prune_cache(args.cache_dir, args.kind, age, dry_run=args.dry_run, log=log)
    for entry, why in result.skipped:
        log(f"skipped {entry.kind}/{entry.name}: {why}")
    verb = "would free" if args.dry_run else "freed"
    log(f"{entries_word(len(result.removed))}, {verb} {human_bytes(result.freed)}; {len(result.skipped)} skipped")
    if args.json:
        print_json(result.to_json())
    return 0
