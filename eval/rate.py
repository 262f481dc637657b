"""Crowd rating: blind pairwise human evaluation of an imitation model against the target.

  python eval/rate.py serve   --pairs=pairs.jsonl --reference=chatgpt --db=ratings.sqlite --port=8000
  python eval/rate.py invite  --db=ratings.sqlite --n=20 --base_url=http://HOST:8000
  python eval/rate.py results --db=ratings.sqlite --out=crowd_rating.json
  python eval/rate.py export  --db=ratings.sqlite --out=ratings.csv

See docs/rating.md.
"""

import argparse
import json
import sys

from easylm_imitate.evaluation import rating
from easylm_imitate.evaluation.rating.commands import DEFAULT_RATINGS_PER_ITEM


def _study_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", help="JSONL of {id, prompt, outputs: {system: text}}; new ids are added to the study.")
    p.add_argument("--reference", help="Name of the reference (target) system in 'outputs'; fixed by the first load.")
    p.add_argument("--model", help="Name of the imitation system (default: the one other system in 'outputs').")
    p.add_argument("--ratings_per_item", type=int,
                   help=f"Ratings per item from distinct raters (default {DEFAULT_RATINGS_PER_ITEM}; fixed by the first load).")
    p.add_argument("--rejects", help="Where bad pairs records go (default: <db>.rejects.jsonl).")


def parser() -> argparse.ArgumentParser:
    """The command-line parser with the serve, invite, results and export subcommands."""
    top = argparse.ArgumentParser(prog="rate.py", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="Run the rating web app.")
    invite = sub.add_parser("invite", help="Create raters; print one rater link per line.")
    results = sub.add_parser("results", help="Aggregate ratings into a results JSON (the report reads it).")
    export = sub.add_parser("export", help="Write every rating as CSV.")
    for p in (serve, invite, results, export):
        p.add_argument("--db", required=True, help="The study's sqlite database (created if missing).")
    for p in (serve, invite):
        _study_flags(p)
    serve.add_argument("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 for every interface).")
    serve.add_argument("--port", type=int, default=8000, help="Port to listen on.")
    serve.add_argument("--admin_token", help="Admin token (default: $EASYLM_RATING_ADMIN_TOKEN, else one "
                                             "stored in the db, generated and printed on first serve).")
    serve.add_argument("--lease_minutes", type=float, default=30.0,
                       help="Minutes an unanswered item stays reserved for its rater.")
    invite.add_argument("--n", type=int, default=1, help="Number of rater links to create.")
    invite.add_argument("--base_url", default="http://127.0.0.1:8000", help="Server address raters will open.")
    results.add_argument("--out", help="Write the results JSON here (atomically); always printed to stdout.")
    export.add_argument("--out", required=True, help="CSV file to write (atomically).")
    return top


def main(argv=None) -> int:
    """Run one subcommand; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        if args.command in ("serve", "invite"):
            rating.load_study(args.db, args.pairs, args.reference, args.model, args.ratings_per_item, args.rejects)
        if args.command == "serve":
            rating.serve(args.db, args.host, args.port, args.admin_token, lease_s=args.lease_minutes * 60)
        elif args.command == "invite":
            print("\n".join(rating.invite(args.db, args.n, args.base_url)))
        elif args.command == "results":
            print(json.dumps(rating.results(args.db, args.out), indent=2))
        elif args.command == "export":
            print(f"{rating.export_csv(args.db, args.out)} ratings -> {args.out}", file=sys.stderr)
    except (rating.StudyError, rating.PairsError, ValueError) as e:
        print(f"rate.py {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
