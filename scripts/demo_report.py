"""Prints what the demo pipeline wrote to InfluxDB and charts it.

Usage: demo_report.py INFLUX_URL DATABASE OUT_DIR
"""
import json
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def query(url, db, q):
    data = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ms"}).encode()
    with urllib.request.urlopen(f"{url}/query", data=data, timeout=30) as r:
        answer = json.load(r)
    result = answer["results"][0]
    if "error" in result:
        raise SystemExit(f"query failed: {result['error']}")
    return result.get("series", [])


def main():
    url, db, out = sys.argv[1], sys.argv[2], sys.argv[3]
    counts = query(url, db, "SELECT count(result) FROM machine GROUP BY quantity")
    print("Points in InfluxDB per quantity:")
    total = 0
    for s in sorted(counts, key=lambda s: s["tags"]["quantity"]):
        n = s["values"][0][1]
        total += n
        print(f"  {s['tags']['quantity']:<20} {n:>7}")
    print(f"  {'total':<20} {total:>7}")

    rows = query(url, db, "SELECT thing, result FROM machine WHERE quantity = 'derivedPower_C11' LIMIT 5")
    if rows:
        print("\nA few joined rows (derivedPower_C11 = 2*pi/60 * actSpeed_C11 * vaTorque_C11, in W):")
        for time_ms, thing, value in rows[0]["values"]:
            print(f"  {time_ms}  {thing:<8} {value:>12.2f}")

    things = query(url, db, "SELECT count(result) FROM machine WHERE quantity = 'derivedPower_C11' GROUP BY thing")
    thing = max(things, key=lambda s: s["values"][0][1])["tags"]["thing"] if things else None
    if thing is None:
        print("\nNo joined points: nothing to chart.")
        return
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(11, 8))
    for ax, (quantity, label) in zip(
        axes,
        [("actSpeed_C11", "speed (rpm)"), ("vaTorque_C11", "torque (Nm)"), ("derivedPower_C11", "derived power (W)")],
    ):
        series = query(url, db, f"SELECT result FROM machine WHERE quantity = '{quantity}' AND thing = '{thing}'")
        if series:
            values = series[0]["values"]
            t0 = values[0][0]
            # Machines idle for hours: break the line at gaps over a minute.
            xs, ys, last = [], [], None
            for t, v in values:
                if last is not None and t - last > 60_000:
                    xs.append(float("nan"))
                    ys.append(float("nan"))
                xs.append((t - t0) / 3_600_000)
                ys.append(v)
                last = t
            ax.plot(xs, ys, linewidth=0.7, marker=".", markersize=2)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("hours since the first record")
    fig.suptitle(f"Millrace demo: machine {thing}, axis C11")
    fig.tight_layout()
    path = f"{out}/chart.png"
    fig.savefig(path, dpi=100)
    print(f"\nChart of speed, torque and derived power: {path}")


if __name__ == "__main__":
    main()
