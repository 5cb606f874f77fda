"""The fan-out tool's nested report (`courtside-loadtest fanout`) as the flat
fields of one result line, for fanout.sh and scale.sh.

    python3 loadtest/fanout_fields.py REPORT LINE [USAGE]

REPORT is the tool's JSON, LINE the common fields (a JSON object), USAGE
(scale.sh) each process group's CPU seconds and RSS. Prints the line: the
flat fields first, then the tool's own fields unchanged, so nothing it
measured is lost.
"""

import json
import sys


def flatten(report, line, usage=None):
    latency = report.get("latency_ms") or {}
    rss = report.get("server_rss_kib") or {}
    gaps = report.get("gaps", 0)
    missing = max(0, report.get("expected_deliveries", 0) - report.get("received", 0))
    line["x"] = report["subscribers"]
    for ours, theirs in (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p999_ms", "p999"), ("max_ms", "max")):
        if theirs in latency:
            line[ours] = latency[theirs]
    # A gap is a missing event seen from the next one; losses after a
    # subscriber's last received event show only as deliveries short of
    # expected; a subscriber that never connected is an error too.
    line["errors"] = (gaps + report.get("duplicates", 0) + report.get("disconnects", 0)
                      + report.get("publish_errors", 0) + max(0, missing - gaps)
                      + max(0, report["subscribers"] - report.get("connected", report["subscribers"])))
    line["missing_deliveries"] = missing
    # Memory under load: sampled at the end of publishing, against the idle
    # server before the first subscriber connected.
    if rss.get("end") is not None:
        line["rss_kib"] = rss["end"]
    if report.get("rss_bytes_per_connection_end") is not None:
        line["rss_per_conn_bytes"] = round(report["rss_bytes_per_connection_end"])
    # Burst mode: each round's completion, first publish to last delivery.
    completion = report.get("round_completion_ms") or {}
    for ours, theirs in (("completion_p50_ms", "p50"), ("completion_max_ms", "max")):
        if completion.get(theirs) is not None:
            line[ours] = completion[theirs]
    if usage is not None:
        line["ramp_secs"] = round(report.get("ramp_secs", 0), 1)
        # Achieved: deliveries over the publishing time (the target is the
        # subscribers over the round).
        line["deliveries_per_second"] = round(report.get("deliveries_per_second", 0))
        line["target_deliveries_per_second"] = report.get("target_deliveries_per_second")
        if "rss_per_conn_bytes" in line:
            line["gateway_rss_per_subscriber_bytes"] = line["rss_per_conn_bytes"]
        delivered = max(1, report.get("received", 0))
        for group, figures in usage.items():
            line[f"{group}_cpu_secs"] = figures["cpu_secs"]
            line[f"{group}_cpu_us_per_delivery"] = round(figures["cpu_secs"] * 1e6 / delivered, 2)
            for key in ("rss_mib", "peak_rss_mib_per_process"):
                if key in figures:
                    line[f"{group}_{key}"] = figures[key]
        line["usage"] = usage
    for key, value in report.items():
        line.setdefault(key, value)
    return line


if __name__ == "__main__":
    usage = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(flatten(json.loads(sys.argv[1]), json.loads(sys.argv[2]), usage), separators=(",", ":")))
