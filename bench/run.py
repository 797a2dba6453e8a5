"""minidl's benchmark suite: ``python -m bench`` (or ``python bench/run.py``).

The course's training loop as the course notebook writes it (float32 images from the
loaders, one-hot labels, ``np.random.choice`` batches of 100, gradient, SGD
update in Python, the batch loss, full train/test accuracy once per epoch) on
MNIST, Fashion-MNIST and a synthetic dense CIFAR-10-gray stand-in (50,000 +
10,000 images of 1024 pixels, ``bench/data.py``), for the 784(1024)-50-10 ReLU
network, run by:

- the book-style NumPy code (``book_numpy.py``: the baseline);
- the same loop on minidl's networks (float64, as a student's network is);
- ``minidl.train`` in float64 and float32;
- PyTorch in float64 and float32, when it is importable.

Every case runs on the same batches and initial weights. The cases of a group
run round-robin, ``--rounds`` times, so that a slow spell of the shared machine
hits all of them; the table gives medians over the rounds:

- ``wall s``: the run's wall time;
- ``est s``: the median epoch (its iterations and one evaluation) times
  iterations/epoch, robust against a neighbour's burst;
- ``ratio``: est over the book's est of the same round;
- ``acc``: the test accuracy at the last evaluation, and ``d``: its difference
  from the book's in test images (float64 does the book's arithmetic on the same
  batches, so it should be 0 there; float32 rounds differently);
- ``floor s``/``floor``: the dense matrix products the loop needs (forward,
  weight gradients, input gradients of the upper layers, the loss's forward,
  the evaluations) over the BLAS throughput measured in this run for that
  width and dtype: what a loop doing nothing but BLAS products would take, and
  its ratio to the book. Zero-skipping kernels can go under it on sparse images.

Then MNIST's ThreeLayerNet (784-100-50-10, Q5) and sigmoid (Q4) groups, the
contention row (``bench/contention.py``), a markdown summary, the peak memory of
the MNIST loop and the kernel benchmarks. Run it under the machine's benchmark
lock: ``flock /tmp/minidl-bench.lock python -m bench``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import timeit
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # for `python bench/run.py`; appended, so that an
    sys.path.append(str(HERE.parent))  # installed minidl still comes first

from bench import cases, contention, data, kernels, torch_loop
from bench.stats import float32_speedups, gemm_floor, markdown_table, robust_estimate

# the MNIST-only groups of the assignment (Q2a's network is every dataset's main group)
MNIST_GROUPS = {
    "Q5": ([784, 100, 50, 10], "relu"),
    "Q4": ([784, 50, 10], "sigmoid"),
}
QUICK = {"n_train": 1000, "n_test": 200, "iters": 60, "rounds": 1}


def default_data_dir():
    # a source checkout beside the shared datasets folder, when nothing else is set
    os.environ.setdefault("MINIDL_DATA_DIR", str(HERE.parent.parent / "shared" / "datasets"))


def blas_gflops(dtype, width=784):
    """np.dot throughput (GFLOP/s) on the loop's shapes for ``width``-pixel images,
    measured now: (a batch's 100 x width @ width x 50, an evaluation chunk's 8192 rows)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((100, width)).astype(dtype)
    b = rng.standard_normal((width, 50)).astype(dtype)
    e = rng.standard_normal((8192, width)).astype(dtype)
    t_small = min(timeit.repeat(lambda: np.dot(a, b), number=200, repeat=5)) / 200
    t_big = min(timeit.repeat(lambda: np.dot(e, b), number=3, repeat=3)) / 3
    return 2 * 100 * width * 50 / t_small / 1e9, 2 * 8192 * width * 50 / t_big / 1e9


def peak_memory(iters, fast):
    """Peak RSS of the MNIST 784-50-10 loop above the RSS after loading MNIST (MB), in a
    subprocess.

    Linux: the peak (VmHWM) is reset after loading, so that the loader's own
    temporaries do not count.
    """
    code = f"""
import sys, numpy as np
sys.path.append({str(HERE.parent)!r})
from bench import book_numpy, data
import minidl
from minidl.networks import TwoLayerNet
arrays = data.load('mnist')
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
base = status('VmRSS')
with open('/proc/self/clear_refs', 'w') as fh:  # reset the peak (VmHWM) to the current RSS
    fh.write('5')
np.random.seed(0)
net = TwoLayerNet(784, 50, 10)
if {fast!r}:
    minidl.train(net, *arrays, lr=0.1, batch_size=100, iters={iters})
else:
    book_numpy.train_loop(net, *arrays, {iters})
print(base, status('VmHWM'))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base, peak = map(float, out.stdout.split())
    return base, peak


def machine():
    from minidl import _sparse

    # the model name, and the family and model numbers (a VM's name can hide the
    # generation, e.g. "AMD EPYC" for Zen 1 to 4, whose vector units differ 2x)
    fields = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():  # the first processor's block is enough
                    break
    except OSError:
        pass
    cpu = fields.get("model name", "?")
    if "cpu family" in fields and "model" in fields:
        cpu += f", family {fields['cpu family']} model {fields['model']}"
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i['version']} {i['num_threads']} threads"
                         for i in threadpool_info() if i["user_api"] == "blas")
    except ImportError:  # NumPy's build information, without the thread count
        try:
            info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            blas = f"{info.get('name', '?')} {info.get('version', '')}".strip()
        except Exception:  # noqa: BLE001 - only a description
            blas = "BLAS unknown"
    from minidl import backend

    threads = ", ".join(f"{name} {getattr(backend, name)}"
                        for name in ("NUM_THREADS", "STEP_THREADS") if hasattr(backend, name))
    set_vars = " ".join(f"{v}={os.environ[v]}" for v in contention.THREAD_VARS
                        if v in os.environ)
    return (f"{platform.node() or 'machine'}: {os.cpu_count()} CPUs ({cpu}), "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"numpy {np.__version__} ({blas}), minidl {source_commit()} (kernels "
            f"{_sparse.SIMD_ISA}; threads: {threads}{'; ' + set_vars if set_vars else ''}), "
            f"load average {os.getloadavg()[0]:.2f}")


def source_commit():
    """The source tree's commit (and '+changes' when it has uncommitted ones), or the
    installed version."""
    import minidl

    try:
        head = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(HERE.parent), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               check=True, timeout=10)
        return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return getattr(minidl, "__version__", "?")


def group_cases(kind_set, torch_version):
    """(kind, dtype, label) of a group: ``main`` (every dataset's 784-50-10 ReLU net) or
    ``extra`` (MNIST's Q5/Q4: float64 only, as the networks a student builds)."""
    out = [("book", np.float64, "book NumPy (baseline)"),
           ("loop", np.float64, "course loop, minidl network"),
           ("train", np.float64, "minidl.train")]
    if kind_set == "main":
        out.append(("train", np.float32, "minidl.train, float32"))
        if torch_version:
            out += [("torch", np.float64, f"PyTorch {torch_version}"),
                    ("torch", np.float32, f"PyTorch {torch_version}, float32")]
    return out


def run_group(title, sizes, act, kind_set, arrays, args, torch_version, gflops):
    """Runs a group round-robin and prints its rows (``gflops``, {dtype: blas_gflops(...)},
    is updated to the best of it and a measurement after the runs); returns
    ``{label: dict(kind, dtype, wall, est, ratio, acc, d_images, floor, floor_ratio)}``."""
    group = group_cases(kind_set, torch_version)
    n_train, n_test = len(arrays[0]), len(arrays[2])
    per_epoch = max(n_train / 100, 1)
    runs = {label: [] for _, _, label in group}  # (wall, est, ratio, acc) per round
    for r in range(args.rounds):
        base = None
        # the book first (every ratio needs it), then the others in a rotating order
        order = group[1:][r % (len(group) - 1):] + group[1:][:r % (len(group) - 1)]
        for kind, dtype, label in [group[0], *order]:
            wall, marks, acc = cases.run_case(kind, sizes, act, dtype, arrays, args.iters)
            est = robust_estimate(wall, marks, args.iters, per_epoch)
            base = base or est
            runs[label].append((wall, est, est / base, acc))
    for dt in gflops:  # the best of the throughputs before and after: a floor is a floor
        gflops[dt] = tuple(max(a, b) for a, b in zip(gflops[dt], blas_gflops(dt, sizes[0])))
    arch = "-".join(map(str, sizes)) + ("" if act == "relu" else " sigmoid")
    rows = {}
    book_est = float(np.median([r[1] for r in runs[group[0][2]]]))
    book_acc = runs[group[0][2]][-1][3]
    for kind, dtype, label in group:
        wall, est, ratio = (float(np.median([r[i] for r in runs[label]])) for i in range(3))
        acc = runs[label][-1][3]
        floor = gemm_floor(sizes, args.iters, n_train, n_test, gflops[dtype])
        rows[label] = {"kind": kind, "dtype": np.dtype(dtype).name, "wall": wall, "est": est,
                       "ratio": ratio, "acc": acc, "d_images": round((acc - book_acc) * n_test),
                       "floor": floor, "floor_ratio": floor / book_est}
        name = f"{title} {arch} {label}"
        print(f"{name:62s} {wall:8.2f} {est:8.2f} {ratio:6.3f} {acc:7.4f} "
              f"{rows[label]['d_images']:+4d} {floor:8.2f} {floor / book_est:6.3f}", flush=True)
    speedups = float32_speedups(group, runs)
    if speedups:
        print(f"{title} float32 speedup (float64 est / float32 est of the same round, "
              f"median): " + ", ".join(f"{name} {s:.2f}x" for name, s in speedups), flush=True)
    return rows


def summary(results, contention_rows, torch_version, args, zero_percent):
    """The markdown table of README's Speed section (ratios to the book's code)."""
    names = [n for n in args.datasets if (n, "main") in results
             or any((n, k) in contention_rows for k in contention.LOOPS)]
    header = ["loop"] + [data.DATASETS[n][0] + (f" ({zero_percent[n]:.0f}% zeros)"
                                                if n in zero_percent else "") for n in names]

    def cell(n, label, key="ratio", fmt="{:.2f}"):
        row = results.get((n, "main"), {}).get(label)
        return "-" if row is None else fmt.format(row[key])

    rows = [] if not any((n, "main") in results for n in names) else [
            ["the book's code (est s)"]
            + [cell(n, "book NumPy (baseline)", "est", "{:.1f} s") for n in names],
            ["the course loop on minidl's networks (float64)"]
            + [cell(n, "course loop, minidl network") for n in names],
            ["`minidl.train` float64"] + [cell(n, "minidl.train") for n in names],
            ["`minidl.train` float32"] + [cell(n, "minidl.train, float32") for n in names]]
    if torch_version and rows:
        rows.append([f"PyTorch {torch_version} CPU float64 / float32"]
                    + [cell(n, f"PyTorch {torch_version}") + " / "
                       + cell(n, f"PyTorch {torch_version}, float32") for n in names])
    if rows:
        rows.append(["matrix products alone (GEMM floor) float64 / float32"]
                    + [cell(n, "book NumPy (baseline)", "floor_ratio") + " / "
                       + cell(n, "minidl.train, float32", "floor_ratio") for n in names])
    for kind, label in contention.LOOPS.items():
        if any((n, kind) in contention_rows for n in names):
            rows.append([f"{label}: default / 1 thread per step, busy neighbour (idle)"]
                        + [f"{contention_rows[n, kind]['busy'][2]:.2f} "
                           f"({contention_rows[n, kind]['idle'][2]:.2f})"
                           if (n, kind) in contention_rows else "-" for n in names])
    print(f"\nSummary (markdown; ratios to the book's code in the same round, medians of "
          f"{args.rounds} round(s), {args.iters} iterations; accuracy equal to the book's "
          f"in the float64 rows: "
          + ("yes" if all(r["d_images"] == 0 for (n, _), g in results.items()
                          for r in g.values() if r["dtype"] == "float64") else "NO, see d")
          + ")")
    print(markdown_table(header, rows))
    for group in MNIST_GROUPS:
        if ("mnist", group) in results:
            g = results["mnist", group]
            print(f"MNIST {group}: " + ", ".join(f"{label} {r['ratio']:.2f}"
                                                  for label, r in g.items()
                                                  if r["kind"] != "book"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="mnist,fashion,cifar",
                    help="comma-separated, from " + ", ".join(data.DATASETS)
                         + " (mnist,fashion,cifar)")
    ap.add_argument("--iters", type=int, default=3000, help="iterations per loop (3000)")
    ap.add_argument("--rounds", "--repeats", type=int, default=3,
                    help="runs of every case, round-robin within a group; the table gives "
                         "medians (3)")
    ap.add_argument("--mnist-groups", default="Q5,Q4",
                    help="MNIST's extra groups: Q5 (784-100-50-10), Q4 (sigmoid); "
                         "'none' for neither (Q5,Q4)")
    ap.add_argument("--contention", default="mnist,fashion",
                    help="datasets of the contention row, 'none' to skip (mnist,fashion: "
                         "those of --datasets)")
    ap.add_argument("--contention-loops", default="loop,train",
                    help="loop (the course's, on minidl's network) and/or train (loop,train)")
    ap.add_argument("--n-train", type=int, default=None,
                    help="use the first N training images only (the synthetic set is made "
                         "that size)")
    ap.add_argument("--n-test", type=int, default=None, help="likewise for the test images")
    ap.add_argument("--quick", action="store_true",
                    help="a tiny run that checks the suite works: "
                         + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
                         + " unless given, no memory or kernel runs; numbers mean nothing")
    ap.add_argument("--no-groups", action="store_true",
                    help="skip the loops' groups (for the contention row alone)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    ap.add_argument("--no-kernels", action="store_true", help="skip the kernel benchmarks")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if f"--{key.replace('_', '-')}" not in argv and not (
                    key == "rounds" and "--repeats" in argv):
                setattr(args, key, value)
        args.no_kernels = args.no_memory = True
    args.datasets = [d for d in args.datasets.split(",") if d]
    for name in args.datasets:
        if name not in data.DATASETS:
            ap.error(f"unknown dataset {name!r}; choose from {', '.join(data.DATASETS)}")
    groups = [] if args.mnist_groups == "none" else [g for g in args.mnist_groups.split(",") if g]
    for g in groups:
        if g not in MNIST_GROUPS:
            ap.error(f"unknown group {g!r}; choose from {', '.join(MNIST_GROUPS)}")
    cont = [] if args.contention == "none" else [
        d for d in args.contention.split(",") if d in args.datasets]
    loops = [k for k in args.contention_loops.split(",") if k]
    if any(k not in contention.LOOPS for k in loops):
        ap.error(f"--contention-loops takes {', '.join(contention.LOOPS)}")
    if args.rounds < 1 or args.iters < 1:
        ap.error("--rounds and --iters must be at least 1")

    default_data_dir()
    print(f"minidl benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(machine())
    torch_version = None if args.no_torch else torch_loop.available()
    if not args.no_torch and torch_version is None:
        print("PyTorch is not importable: its rows are skipped (pip install torch to add them).")
    print(f"\nThe course's loop, {args.iters} iterations, batch 100, lr 0.1, evaluation once "
          f"per epoch; {args.rounds} round(s) round-robin, medians; ratio and floor to the "
          f"book's est of the same group")
    header = (f"{'case':62s} {'wall s':>8s} {'est s':>8s} {'ratio':>6s} {'acc':>7s} "
              f"{'d':>4s} {'floor s':>8s} {'floor':>6s}")
    print(header)
    print("-" * len(header))
    results = {}
    zero_percent = {}
    mnist_arrays = None
    for name in [] if args.no_groups else args.datasets:
        arrays = data.load(name, args.n_train, args.n_test)
        zero_percent[name] = 100 * data.zero_fraction(arrays[0])
        width = arrays[0].shape[1]
        gflops = {dt: blas_gflops(dt, width) for dt in (np.float64, np.float32)}
        title = data.DATASETS[name][0]
        print(f"-- {title}: {len(arrays[0])} + {len(arrays[2])} images of {width} pixels, "
              f"{zero_percent[name]:.0f}% zeros", flush=True)
        results[name, "main"] = run_group(title, [width, 50, 10], "relu", "main", arrays, args,
                                          torch_version, gflops)
        print(f"   np.dot GFLOP/s, best before/after the group: float64 "
              f"{gflops[np.float64][0]:.1f} (100x{width}x50), {gflops[np.float64][1]:.1f} "
              f"(8192x{width}x50), float32 {gflops[np.float32][0]:.1f}, "
              f"{gflops[np.float32][1]:.1f}", flush=True)
        if name == "mnist":
            mnist_arrays = arrays
            for g in groups:
                sizes, act = MNIST_GROUPS[g]
                results[name, g] = run_group(f"{title} {g}", sizes, act, "extra", arrays,
                                             args, torch_version, gflops)
        del arrays
    contention_rows = {}
    if cont and loops:
        contention_rows = contention.run(cont, loops, args.rounds, args.n_train,
                                         args.n_test)
    summary(results, contention_rows, torch_version, args, zero_percent)

    if not args.no_memory and mnist_arrays is not None:
        iters = min(args.iters, 1300)
        for fast, label in ((True, "minidl.train"), (False, "course loop, minidl network")):
            base_rss, peak = peak_memory(iters, fast)
            print(f"\nPeak memory, MNIST 784-50-10 {label} ({iters} iterations): "
                  f"{peak - base_rss:.0f} MB above the {base_rss:.0f} MB after loading MNIST "
                  f"(the dataset arrays: {sum(a.nbytes for a in mnist_arrays) / 2**20:.0f} MB)",
                  end="")
        print()
    if not args.no_kernels and mnist_arrays is not None:
        kernels.run(mnist_arrays[0], mnist_arrays[1].argmax(axis=1))
    return results, contention_rows


if __name__ == "__main__":
    main()
