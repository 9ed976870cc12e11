#!/usr/bin/env python3
"""Share of the server's managed CPU samples by phase, from a dotnet-trace Speedscope file (docs/performance.md).

    dotnet-trace collect -p PID --profile dotnet-sampled-thread-time --format Speedscope --duration 00:00:00:25 -o x.nettrace
    python3 bench/trace-phases.py x.speedscope.json [--stacks 20]

The sampler records every managed thread ~100 times a second. A sample whose top frame is CPU_TIME was
running managed code; UNMANAGED_CODE_TIME mixes native work with threads blocked in the kernel, so only
CPU_TIME samples are counted. Each sample goes to the phase of its innermost recognised frame; work done
for the audit (serialising the AuditEvent, its COPY) counts as audit.
"""
import collections
import json
import sys

PHASES = [
    ("logging (console)", ("Microsoft.Extensions.Logging", "ConsoleLogger", "TextWriter")),
    ("audit", ("AuditChain", "AppendAudits", "AuditWriter", "ControlCharacters", "BalpAuditEvents", "AuditTrail.Row",
               "QueryPerPatient", "AuditTrail+<SearchedAsync>", "AuditLog")),
    ("authorise", ("IdentityModel", "OpenIddict", "Authentication", "Authorization", "AccessPolicy",
                   "PhrFhir.Server.Security", "ConsentRules", "AccessFilter")),
    ("validate", ("Firely.Fhir.Validation", "PhrFhir.Validation")),
    ("index extraction (FhirPath)", ("FhirPath", "Hl7.FhirPath", "IndexRows", "SearchIndex")),
    ("serialise", ("Serializ", "Utf8JsonWriter", "FhirResponse")),
    ("parse", ("FhirJsonParser", "Deserializ", "Utf8JsonReader", "JsonDocument", "PocoBuilder")),
    ("SQL (Npgsql, Marten)", ("Npgsql", "Marten", "PhrFhir.Storage")),
    ("HTTP (Kestrel, routing, sockets)", ("Kestrel", "AspNetCore", "System.Net.Sockets", "Routing", "Pipelines",
                                          "SocketAsyncEngine")),
    ("thread pool (spinning, waking)", ("LowLevelLifoSemaphore", "WorkerThreadStart", "GateThreadStart", "TimerThread",
                                        "Semaphore.Release", "PollGC", "ThreadPool")),
]
FOR_AUDIT = ("AuditTrail.Row", "AppendAudits", "AuditWriter", "SealAudit")


def stacks_of(path):
    """Time per distinct stack, from Speedscope's evented profiles (one per thread)."""
    data = json.load(open(path, encoding="utf-8"))
    names = [f["name"] for f in data["shared"]["frames"]]
    out = collections.Counter()
    for profile in data["profiles"]:
        stack, last = [], None
        for e in profile["events"]:
            if last is not None and stack and e["at"] > last:
                out[tuple(stack)] += e["at"] - last
            last = e["at"]
            if e["type"] == "O":
                stack.append(e["frame"])
            elif stack:
                stack.pop()
    return [([names[i] for i in s], w) for s, w in out.items()]


def phase(frames):
    for f in reversed(frames[:-1]):
        for name, keys in PHASES:
            if any(k in f for k in keys):
                if name in ("serialise", "parse", "SQL (Npgsql, Marten)") and any(a in " ".join(frames) for a in FOR_AUDIT):
                    return "audit"
                return name
    return "other"


def main():
    path = sys.argv[1]
    show = int(sys.argv[sys.argv.index("--stacks") + 1]) if "--stacks" in sys.argv else 0
    by_phase, by_stack = collections.Counter(), collections.Counter()
    for frames, ms in stacks_of(path):
        if not frames or frames[-1] != "CPU_TIME":
            continue
        by_phase[phase(frames)] += ms
        by_stack[" < ".join(f.split("!")[-1][:70] for f in frames[-4:-1][::-1])] += ms
    total = sum(by_phase.values())
    busy = total - by_phase["thread pool (spinning, waking)"]
    print(f"managed CPU samples: {total:.0f} ms")
    print("| phase | share | without the idle thread pool |")
    print("|---|---|---|")
    for name, ms in by_phase.most_common():
        rest = "—" if name.startswith("thread pool") else f"{100 * ms / max(busy, 1):.0f} %"
        print(f"| {name} | {100 * ms / total:.0f} % | {rest} |")
    for text, ms in by_stack.most_common(show):
        print(f"{ms:8.0f} ms  {text}")


if __name__ == "__main__":
    main()
