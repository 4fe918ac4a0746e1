"""`megabyte compare SUITE`: train several models on one budget, then compare them (compare/)."""


def register(subparsers) -> None:
    compare = subparsers.add_parser("compare", help="compute-controlled comparison of models on one dataset: "
                                                    "train each on the same budget, evaluate, tabulate, plot")
    compare.add_argument("suite", metavar="SUITE",
                         help="a suite TOML file, or a shipped suite's name (compare/suites/)")
    compare.add_argument("--plan", action="store_true",
                         help="check the suite and print each run's steps and FLOPs, the total and the "
                              "estimated training time (from timing each model's steps here); train nothing")
    compare.add_argument("--device", default=None,
                         help="torch device of the evaluation, e.g. cpu or cuda:0 (default: cuda when there is one)")
    compare.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from compare.plan import plan_suite, suite_cost
    from compare.suite import load_suite
    from tools.cmd_model import pick_device

    suite = load_suite(args.suite)
    if args.plan:
        plans = plan_suite(suite, save=False)  # a dry run writes nothing
        for name, plan in plans.items():
            print(f"{name}: {plan.steps:,} steps × {plan.flops_per_step:.3g} FLOPs = "
                  f"{plan.steps * plan.flops_per_step:.3g} FLOPs, {plan.steps * plan.positions_per_step:,} bytes")
        if suite.seeds > 1:
            print(f"then each run's best setting again with {suite.seeds - 1} more seed(s)")
        flops, seconds = suite_cost(suite, plans)
        print(f"in all: {flops:.3g} training FLOPs, about {seconds / 60:.0f} minutes of training on this "
              "machine (timed here; evaluation and generation come on top)")
        return 0
    from compare.runner import run_suite

    run_suite(suite, pick_device(args.device))
    return 0
