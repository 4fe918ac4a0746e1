"""`megabyte train` and `megabyte config`: run (or resume) training; print a resolved config."""

from train.flags import add_train_flags


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train (or resume) from a TOML config; also runs "
                                                "under the deepspeed launcher (-m train.main)")
    add_train_flags(train)
    train.set_defaults(func=cmd_train)

    config = subparsers.add_parser("config", help="print the resolved training config as JSON")
    add_train_flags(config)
    config.set_defaults(func=cmd_config)


def cmd_train(args) -> int:
    from train.config import load_config

    config = load_config(args.config, args.set)
    config.check_paths()  # run() checks again, but only after DeepSpeed is imported and started
    from train.main import run  # imports torch and DeepSpeed: only when training

    result = run(config)
    if result:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return 0


def cmd_config(args) -> int:
    from train.config import dump_config, load_config

    print(dump_config(load_config(args.config, args.set)))
    return 0
