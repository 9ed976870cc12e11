#!/usr/bin/env python3
"""Statements, round trips and CPU per request: creates, transactions and reads (issue #12, docs/performance.md).

Starts nothing: point it at a server started with the embedded PostgreSQL's statement statistics on, e.g.

    dotnet src/PhrFhir.Server/bin/Release/net10.0/PhrFhir.Server.dll --urls http://127.0.0.1:5180 \\
        --Storage:DataDirectory=/tmp/ws/pg --Storage:Port=55480 --Storage:StatementStatistics=true
    python3 bench/write-statements.py --base http://127.0.0.1:5180 --pg-port 55480 --data /tmp/ws/pg --server-pid PID

(PHRFHIR_CLIENTS=examples/auth/clients.dev.json for the development clients.) For each of `create` (POST /Patient,
the bench's small Japanese Patient) and `transaction` (the bench's 10 entries: 2 Patients + 8 Observations) it sends
--warmup requests, resets pg_stat_statements, sends --count requests one after another and prints every
statement with its calls per request; `read` (GET Patient/{id} of one Patient created first) does the same. Then the totals: statements per request, server and PostgreSQL CPU ms per
request (/proc utime+stime of the server process and of every process of the cluster).
"""
import argparse, base64, http.client, json, os, random, subprocess, time, urllib.parse, urllib.request, uuid

MRN_SYSTEM = "urn:oid:1.2.392.100495.20.3.51.11312345678"  # kenshin-a's own domain (docs/identity.md)
REP = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"


def patient(mrn):
    return {"resourceType": "Patient", "identifier": [{"system": MRN_SYSTEM, "value": mrn}], "active": True,
            "name": [{"extension": [{"url": REP, "valueCode": "IDE"}], "use": "official", "text": "山田 太郎", "family": "山田", "given": ["太郎"]},
                     {"extension": [{"url": REP, "valueCode": "SYL"}], "use": "official", "text": "ヤマダ タロウ", "family": "ヤマダ", "given": ["タロウ"]}],
            "telecom": [{"system": "phone", "value": "090-1234-5678", "use": "mobile"}], "gender": "male", "birthDate": "1970-04-01",
            "address": [{"text": "東京都新宿区1-2-3", "country": "JP"}]}


def observation(subject, i):
    code, display, ja, unit = [("29463-7", "Body weight", "体重", "kg"), ("8302-2", "Body height", "身長", "cm"),
                               ("8867-4", "Heart rate", "心拍数", "/min"), ("2339-0", "Glucose", "血糖値", "mg/dL")][i % 4]
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": ja},
            "subject": {"reference": subject}, "effectiveDateTime": "2025-01-02T09:00:00+09:00",
            "valueQuantity": {"value": 60.5, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def transaction(next_mrn):
    entries = []
    for _ in range(2):
        full = "urn:uuid:" + str(uuid.uuid4())
        entries.append({"fullUrl": full, "resource": patient(next_mrn()), "request": {"method": "POST", "url": "Patient"}})
        entries += [{"resource": observation(full, i), "request": {"method": "POST", "url": "Observation"}} for i in range(4)]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def cpu_ms(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        except FileNotFoundError:
            pass
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def cluster_pids(data):
    with open(os.path.join(data, "postmaster.pid")) as f:
        postmaster = f.readline().strip()
    children = subprocess.run(["pgrep", "-P", postmaster], capture_output=True, text=True).stdout.split()
    return [postmaster] + children


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--base", required=True)
    a.add_argument("--pg-port", required=True)
    a.add_argument("--data", required=True, help="the PostgreSQL data directory (its password file)")
    a.add_argument("--server-pid", type=int, required=True)
    a.add_argument("--count", type=int, default=200)
    a.add_argument("--warmup", type=int, default=50)
    a.add_argument("--scenarios", default="create,transaction")
    a.add_argument("--cpu-only", action="store_true", help="a server without Storage:StatementStatistics: CPU per request only")
    o = a.parse_args()
    base = o.base.rstrip("/") + "/"
    password = open(os.path.join(o.data, "phrfhir.password")).read().strip()
    env = dict(os.environ, PGPASSWORD=password)

    def sql(q):
        return subprocess.run(["psql", "-h", "127.0.0.1", "-p", o.pg_port, "-U", "phrfhir", "-d", "phrfhir", "-At", "-F", "\t", "-c", q],
                              env=env, capture_output=True, text=True, check=True).stdout

    req = urllib.request.Request(base + "auth/token", data=b"grant_type=client_credentials", method="POST")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"kenshin-a:kenshin-a-secret-change-me").decode())
    token = json.load(urllib.request.urlopen(req))["access_token"]
    run = f"{random.randrange(10**6):06d}"
    counter = iter(range(10**9))

    def next_mrn():
        return f"ws{run}-{next(counter)}"

    # One keep-alive connection, as a real client (and the load bench) holds: connection set-up is not in the figures.
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port)
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/fhir+json"}

    def call(method, path, body=None):
        conn.request(method, url.path + path, body=None if body is None else json.dumps(body, ensure_ascii=False).encode(), headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status in (200, 201), (resp.status, data[:300])
        return data

    def post(path, body):
        return call("POST", path, body)

    read_id = json.loads(post("Patient", patient(next_mrn())))["id"]
    for scenario in o.scenarios.split(","):
        send = {"create": lambda: post("Patient", patient(next_mrn())), "transaction": lambda: post("", transaction(next_mrn)),
                "read": lambda: call("GET", f"Patient/{read_id}")}[scenario]
        for _ in range(o.warmup):
            send()
        time.sleep(1.5)  # the audit sealer's round (every second) out of the window as far as possible
        if not o.cpu_only:
            sql("select pg_stat_statements_reset()")
        pg = cluster_pids(o.data)
        s0, p0, t0 = cpu_ms([o.server_pid]), cpu_ms(pg), time.monotonic()
        for _ in range(o.count):
            send()
        s1, p1, t1 = cpu_ms([o.server_pid]), cpu_ms(pg), time.monotonic()
        rows = "" if o.cpu_only else sql("select calls, round(total_exec_time::numeric, 1), regexp_replace(left(query, 150), '\\s+', ' ', 'g') "
                   "from pg_stat_statements where query not like '%pg_stat_statements%' order by calls desc, query")
        print(f"\n== {scenario}: {o.count} requests, one client, {(t1 - t0) * 1000 / o.count:.1f} ms each")
        print(f"{'calls/req':>9}  {'exec ms/req':>11}  statement")
        total = 0.0
        for line in rows.strip().splitlines():
            calls, ms, query = line.split("\t", 2)
            per = int(calls) / o.count
            total += per
            print(f"{per:9.2f}  {float(ms) / o.count:11.3f}  {query}")
        print(f"statements/request {total:.1f}; server CPU {(s1 - s0) / o.count:.2f} ms/request; "
              f"PostgreSQL CPU {(p1 - p0) / o.count:.2f} ms/request; loadavg {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
