"""`megabyte compare SUITE`: train several models on one budget, then compare them (compare/)."""


def register(subparsers) -> None:
    compare = subparsers.add_parser("compare", help="compute-controlled comparison of models on one dataset: "
                                                    "train each on the same budget, evaluate, tabulate, plot")
    compare.add_argument("suite", metavar="SUITE",
                         help="a suite TOML file, or a shipped suite's name (compare/suites/)")
    compare.add_argument("--plan", action="store_true",
                         help="check the suite and print each run's steps and FLOPs; train nothing")
    compare.add_argument("--device", default=None,
                         help="torch device of the evaluation, e.g. cpu or cuda:0 (default: cuda when there is one)")
    compare.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from compare.plan import plan_suite
    from compare.suite import load_suite
    from tools.cmd_model import pick_device

    suite = load_suite(args.suite)
    if args.plan:
        for name, plan in plan_suite(suite, save=False).items():  # a dry run writes nothing
            print(f"{name}: {plan.steps:,} steps × {plan.flops_per_step:.3g} FLOPs = "
                  f"{plan.steps * plan.flops_per_step:.3g} FLOPs, {plan.steps * plan.positions_per_step:,} bytes")
        return 0
    from compare.runner import run_suite

    run_suite(suite, pick_device(args.device))
    return 0
