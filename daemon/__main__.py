"""``python -m flexnpu_daemon --device 0 [--backend emulated] [--memory 16GiB]``: one device's
daemon in the foreground.  Prints ``READY <socket> pid <pid>`` once it accepts clients; stops on
SIGTERM, SIGINT or ``flexnpu daemon stop``, detaching every client, and exits 0."""

import os

# The emulated device computes with numpy: one BLAS thread, so that the daemon does not fight the
# processes it serves for cores (set before numpy is imported).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402


def main(argv=None) -> int:
    from flexnpu.sizes import parse_size

    parser = argparse.ArgumentParser(prog="python -m flexnpu_daemon", description=__doc__.split("\n")[0])
    parser.add_argument("--device", type=int, default=0, help="physical device id (default 0)")
    parser.add_argument("--backend", default="emulated", choices=["emulated", "ascend"])
    parser.add_argument("--memory", type=parse_size, default=parse_size("16GiB"),
                        help="device memory of the emulated backend (default 16GiB)")
    parser.add_argument("--spin-us", type=float, default=50.0,
                        help="how long the idle drainer spins for the next record before it parks (default 50)")
    parser.add_argument("--log-level", default=os.environ.get("FLEXNPU_LOG", "WARNING"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="flexnpu-daemon[%(process)d] %(levelname)s %(message)s")
    from flexnpu_daemon.server import run_daemon

    return run_daemon(args.device, args.backend, args.memory, spin_ns=int(args.spin_us * 1000))


if __name__ == "__main__":
    sys.exit(main())
