"""The `keras-stability` command."""

import argparse
import os
import sys



ONE_ARGUMENT_TRANSFORMS = ("clip_by_value", "clip_by_norm", "clip_by_global_norm", "normalize_gradient")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-stability",
        description="Gradient-stability toolkit for Keras: transforms, telemetry and reproducible runs.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train the 784-128-64-10 MLP on the embedded MNIST digits with gradient telemetry"
    )
    demo.add_argument("--epochs", type=int, default=3, help="training epochs (default: 3)")
    demo.add_argument(
        "--transform",
        choices=ONE_ARGUMENT_TRANSFORMS + ("none",),
        default="clip_by_global_norm",
        help="gradient transform taking one threshold argument (default: clip_by_global_norm)",
    )
    demo.add_argument("--threshold", type=float, default=1.0, help="the transform's threshold (default: 1.0)")
    demo.add_argument("--learning-rate", type=float, default=0.1, help="SGD learning rate (default: 0.1)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser




def main(argv=None):
    # TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) buries the output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        if args.epochs < 1 or args.threshold <= 0 or args.learning_rate <= 0:
            print("keras-stability demo: --epochs, --threshold and --learning-rate must be > 0.", file=sys.stderr)
            return 2
        from keras_stability.demo import run_demo

        run_demo(
            epochs=args.epochs,
            transform=None if args.transform == "none" else args.transform,
            threshold=args.threshold,
            learning_rate=args.learning_rate,
            seed=args.seed,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
