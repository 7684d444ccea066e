#!/usr/bin/env python3
"""Checks join-stage logs for a committed position that went back.

Reads JSON log lines of `millrace-worker run --stage join` run with
RUST_LOG=millrace_worker=debug (from files or standard input; other lines
are ignored). Per instance (span `join{id}`) and partition, every
"partition state rebuilt" position must be at least the position of the
last "transaction committed" before it: a smaller one means the committed
offsets read back were older than the last commit, and the pairs between
the two are emitted again. Likewise a committed position smaller than
the one committed before it. Prints one line per finding and a summary;
exits 1 if anything was stale.

    python3 scripts/check-join-log.py worker.log
"""
import fileinput
import json
import sys


def main() -> int:
    last = {}
    rebuilt = stale = 0
    for line in fileinput.input():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        instance = (entry.get("span") or {}).get("id")
        fields = entry.get("fields", {})
        message = fields.get("message", "")
        if instance is None:
            continue
        if message == "transaction committed":
            key = (instance, fields["partition"])
            pos = json.loads(fields["position"])["pos"]
            if key in last and pos < last[key]:
                stale += 1
                print(f"{instance} partition {key[1]}: committed position {pos} after {last[key]}")
            last[key] = pos
        elif message.startswith("partition state rebuilt"):
            rebuilt += 1
            key = (instance, fields["partition"])
            if key in last and fields["pos"] < last[key]:
                stale += 1
                print(f"{instance} partition {key[1]}: rebuilt at position {fields['pos']}, "
                      f"but {last[key]} was committed before")
    print(f"{rebuilt} partition rebuilds, {stale} positions that went back")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
