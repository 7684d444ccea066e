#!/usr/bin/env python3
"""Peak resident memory of `millrace-worker join-file` (the whole process)
over generated narrow records, fed through a pipe, in time order:

- paired: every machine sends speed and torque together;
- quiet mix: beside machines that flow, machines whose torque goes quiet
  for three hours in every six, machines whose torque sensor dies for good
  after the first tenth, and machines with speed but no torque at all;
- quiet mix, horizon 1000h: the same with a horizon longer than the data,
  i.e. the join as it was before `stateHorizon`.

Each case runs at several sizes: flat memory from one size to the next is
the point. Usage: bench_join_memory.py WORKER [SIZE ...] (default
2.5 M, 5 M and 10 M records).
"""
import os
import subprocess
import sys
import time

WORKER = sys.argv[1]
SIZES = [int(float(s)) for s in sys.argv[2:]] or [2_500_000, 5_000_000, 10_000_000]
MACHINES = 24
STEP_MS = 1000  # one round of samples a second of machine time
START_MS = 1_700_000_000_000


def kinds(mix):
    """What each machine sends: 'both', 'quiet' (torque off 3 h of every 6),
    'dies' (torque stops after the first tenth) or 'speed' (never torque)."""
    if not mix:
        return ["both"] * MACHINES
    cycle = ["both", "both", "quiet", "dies", "speed", "both"]
    return [cycle[m % len(cycle)] for m in range(MACHINES)]


def records(n, mix):
    """Yields batches of JSONL bytes, `n` records in all, in time order."""
    ks = kinds(mix)
    out, made, r = [], 0, 0
    # Rounds in the whole run, to know when a tenth has passed (as if every
    # machine sent both: the dying sensor stops a little earlier).
    dies_after = n // (2 * len(ks)) // 10
    while made < n:
        t = START_MS + r * STEP_MS
        hour = (r * STEP_MS) // 3_600_000
        for m, k in enumerate(ks):
            thing = f"M{m:03d}"
            out.append(f'{{"thing":"{thing}","quantity":"actSpeed_C11","phenomenonTime":{t},"result":{(r % 997) * 1.5}}}\n')
            made += 1
            torque = k == "both" or (k == "quiet" and hour % 6 < 3) or (k == "dies" and r < dies_after)
            if torque and made < n:
                out.append(f'{{"thing":"{thing}","quantity":"vaTorque_C11","phenomenonTime":{t + 3},"result":{(r % 101) * 0.25}}}\n')
                made += 1
            if made >= n:
                break
        r += 1
        if len(out) >= 20_000:
            yield "".join(out).encode()
            out = []
    if out:
        yield "".join(out).encode()


def run(n, mix, horizon):
    args = [WORKER, "join-file", "-", "--left", r"actSpeed_(C\d+)", "--right", r"vaTorque_(C\d+)",
            "--rejects", os.devnull]
    if horizon:
        args += ["--state-horizon", horizon]
    started = time.monotonic()
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Joined lines are counted by `wc -l`, which drains the output while
    # this process writes the input (reading it afterwards would deadlock).
    counter = subprocess.Popen(["wc", "-l"], stdin=p.stdout, stdout=subprocess.PIPE)
    p.stdout.close()
    for batch in records(n, mix):
        p.stdin.write(batch)
    p.stdin.close()
    _, status, usage = os.wait4(p.pid, 0)
    joined = int(counter.communicate()[0])
    summary = p.stderr.read().decode().strip().splitlines()
    if status != 0:
        sys.exit(f"join-file failed ({status}): {summary}")
    return usage.ru_maxrss / 1024, joined, time.monotonic() - started, summary[-1] if summary else ""


def main():
    print(f"machine: {os.cpu_count()} cores; {MACHINES} machines, a sample round every {STEP_MS} ms of machine time; "
          f"peak RSS of the whole join-file process (generator and counter are separate processes)")
    cases = [("paired", False, None), ("quiet mix, default horizon (1h)", True, None), ("quiet mix, horizon 1000h", True, "1000h")]
    for name, mix, horizon in cases:
        for n in SIZES:
            rss, joined, secs, summary = run(n, mix, horizon)
            print(f"{name:34s} {n/1e6:5.1f} M records: peak RSS {rss:7.1f} MiB, {joined} joined, {secs:5.1f} s | {summary}",
                  flush=True)


if __name__ == "__main__":
    main()
