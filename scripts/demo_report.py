"""Prints what the demo pipeline wrote to InfluxDB and charts it.

The chart shows a short window of one machine's axis, where speed, torque
and the derived power are curves one can follow, and sets the derived power
against the power the machine reports itself (vaPower_C11): where both exist
at the same instant they should agree, which shows the join is right.

Usage: demo_report.py INFLUX_URL DATABASE OUT_DIR
"""
import bisect
import json
import statistics
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

AXIS = "C11"
SPEED, TORQUE = f"actSpeed_{AXIS}", f"vaTorque_{AXIS}"
DERIVED, REPORTED = f"derivedPower_{AXIS}", f"vaPower_{AXIS}"
WINDOW_MS = 120_000


def query(url, db, q):
    data = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ms"}).encode()
    with urllib.request.urlopen(f"{url}/query", data=data, timeout=30) as r:
        answer = json.load(r)
    result = answer["results"][0]
    if "error" in result:
        raise SystemExit(f"query failed: {result['error']}")
    return result.get("series", [])


def series(url, db, thing, quantity):
    """[(time_ms, value)] of one quantity of one machine, in time order."""
    s = query(url, db, f"SELECT result FROM machine WHERE quantity = '{quantity}' AND thing = '{thing}'")
    return [(t, v) for t, v in s[0]["values"]] if s else []


def between(points, start, end):
    times = [t for t, _ in points]
    return points[bisect.bisect_left(times, start) : bisect.bisect_left(times, end)]


def busiest_window(data):
    """The window where all four quantities have most points, and among
    those where the speed changes most: something happens there."""
    best, best_score = None, None
    for start, _ in data[SPEED]:
        inside = {q: between(p, start, start + WINDOW_MS) for q, p in data.items()}
        speeds = [v for _, v in inside[SPEED]]
        score = (min(len(p) for p in inside.values()), max(speeds) - min(speeds))
        if best_score is None or score > best_score:
            best, best_score = start, score
    return best


def same_instants(derived, reported):
    """(reported, derived) at the instants where both exist: the join pairs
    speed and torque of one message at that message's time."""
    at = dict(derived)
    return [(v, at[t]) for t, v in reported if t in at]


def print_counts(url, db):
    counts = query(url, db, "SELECT count(result) FROM machine GROUP BY quantity")
    print("Points in InfluxDB per quantity:")
    total = 0
    for s in sorted(counts, key=lambda s: s["tags"]["quantity"]):
        n = s["values"][0][1]
        total += n
        print(f"  {s['tags']['quantity']:<20} {n:>7}")
    print(f"  {'total':<20} {total:>7}")


def chart(thing, data, pairs, start, path):
    fig = plt.figure(figsize=(13, 8))
    grid = fig.add_gridspec(3, 2, width_ratios=[2.2, 1])
    axes = [fig.add_subplot(grid[0, 0])]
    axes += [fig.add_subplot(grid[i, 0], sharex=axes[0]) for i in (1, 2)]
    window = {q: between(p, start, start + WINDOW_MS) for q, p in data.items()}

    def plot(ax, quantity, label, **style):
        xs = [(t - start) / 1000 for t, _ in window[quantity]]
        ax.plot(xs, [v for _, v in window[quantity]], label=label, **style)

    plot(axes[0], SPEED, SPEED, color="tab:blue", marker=".", linewidth=1)
    axes[0].set_ylabel("speed (rpm)")
    plot(axes[1], TORQUE, TORQUE, color="tab:orange", marker=".", linewidth=1)
    axes[1].set_ylabel("torque (Nm)")
    plot(axes[2], DERIVED, f"{DERIVED} = 2π/60 · speed · torque (joined)", color="tab:green", linewidth=1.2)
    plot(axes[2], REPORTED, f"{REPORTED} (reported by the machine)", color="black", marker="o", markersize=4, linestyle="none", fillstyle="none")
    axes[2].set_ylabel("power (W)")
    axes[2].set_xlabel(f"seconds into the window ({WINDOW_MS // 1000} s of the replay)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)

    if pairs:
        compare(fig.add_subplot(grid[:, 1]), pairs)
    fig.suptitle(f"Millrace demo: machine {thing}, axis {AXIS}: the joined power follows the machine's own")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def compare(scatter, pairs):
    """Joined against reported power at every instant with both."""
    xs, ys = [r for r, _ in pairs], [d for _, d in pairs]
    scatter.scatter(xs, ys, s=6, alpha=0.5, color="tab:green")
    lo, hi = min(xs + ys), max(xs + ys)
    scatter.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, label="derived = reported")
    scatter.set_xlabel(f"{REPORTED}, reported (W)")
    scatter.set_ylabel(f"{DERIVED}, joined (W)")
    scatter.set_title(f"every instant with both ({len(pairs)})", fontsize=10)
    scatter.grid(True, alpha=0.3)
    scatter.legend(loc="upper left", fontsize=8)


def main():
    url, db, out = sys.argv[1], sys.argv[2], sys.argv[3]
    print_counts(url, db)

    things = query(url, db, f"SELECT count(result) FROM machine WHERE quantity = '{DERIVED}' GROUP BY thing")
    if not things:
        print("\nNo joined points: nothing to chart.")
        return
    thing = max(things, key=lambda s: s["values"][0][1])["tags"]["thing"]
    data = {q: series(url, db, thing, q) for q in (SPEED, TORQUE, DERIVED, REPORTED)}
    pairs = same_instants(data[DERIVED], data[REPORTED])

    print(f"\nJoined against reported power, machine {thing} ({DERIVED} = 2*pi/60 * {SPEED} * {TORQUE}, in W):")
    at = dict(data[DERIVED])
    for t, reported in data[REPORTED][:5]:
        if t in at:
            print(f"  {t}  joined {at[t]:>10.1f}  reported {reported:>10.1f}")
    if pairs:
        # Relative difference where the power is not near zero (the ratio of
        # two small numbers says nothing).
        big = [abs(d - r) / abs(r) for r, d in pairs if abs(r) >= 100]
        if big:
            print(f"  {len(pairs)} instants with both; where |power| >= 100 W ({len(big)}) they differ by {100 * statistics.median(big):.1f}% (median)")
    else:
        print(f"  the machine reports no {REPORTED}: nothing to set the joined power against")
    if not data[SPEED]:
        print(f"\nNo {SPEED} for {thing}: nothing to chart.")
        return
    start = busiest_window(data)
    path = f"{out}/chart.png"
    chart(thing, data, pairs, start, path)
    print(f"\nChart of {WINDOW_MS // 1000} s of speed, torque and joined against reported power: {path}")


if __name__ == "__main__":
    main()
