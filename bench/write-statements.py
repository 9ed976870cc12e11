#!/usr/bin/env python3
"""Statements, round trips, WAL and CPU per write or read request (issue #12, docs/performance.md "Creates and
transactions" and "Audit").

Starts nothing: point it at a server started with the embedded PostgreSQL's statement statistics on, e.g.

    dotnet src/PhrFhir.Server/bin/Release/net10.0/PhrFhir.Server.dll --urls http://127.0.0.1:5180 \\
        --Storage:DataDirectory=/tmp/ws/pg --Storage:Port=55480 --Storage:StatementStatistics=true
    python3 bench/write-statements.py --base http://127.0.0.1:5180 --pg-port 55480 --data /tmp/ws/pg --server-pid PID

(PHRFHIR_CLIENTS=examples/auth/clients.dev.json for the development clients.) For each of `create` (POST /Patient,
the bench's small Japanese Patient) and `transaction` (the bench's 10 entries: 2 Patients + 8 Observations) it sends
--warmup requests, resets pg_stat_statements, sends --count requests one after another and prints every
statement with its calls per request, then the totals: statements per request, server and PostgreSQL CPU ms per
request (/proc utime+stime of the server process and of every process of the cluster), WAL bytes per request and per
AuditEvent stored, and the audit table's row updates. `read` (GET /Patient/{id} of one Patient, --clients at a
time) measures the audit of reads: its AuditEvents are stored in the background, so --settle (default 2.5 s for
`read`) keeps the window open until the audit writer's batches and the sealer's round are in it.
"""
import argparse, base64, hashlib, itertools, json, os, random, subprocess, time, urllib.parse, urllib.request, uuid
from concurrent.futures import ThreadPoolExecutor

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


MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
DOCUMENT_1K = ("経過記録 " * 120).encode()[:1024]  # 1 kB of text/plain, as the bench's ITI-65 row


def uuid_oid():
    return "urn:oid:2.25." + str(uuid.uuid4().int)


def provide_bundle(patient_id):
    """The bench's ITI-65 row (bench/PhrFhir.Bench Rows.ProvideBundle): Minimal metadata, profiles declared, 1 kB Binary."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    s, d, b = ("urn:uuid:" + str(uuid.uuid4()) for _ in range(3))
    subject = {"reference": f"Patient/{patient_id}"}
    sha1 = base64.b64encode(hashlib.sha1(DOCUMENT_1K).digest()).decode()
    doc = {"resourceType": "DocumentReference", "meta": {"profile": [MHD + "IHE.MHD.Minimal.DocumentReference"]},
           "masterIdentifier": {"use": "usual", "system": "urn:ietf:rfc:3986", "value": uuid_oid()}, "status": "current",
           "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]}, "subject": subject, "date": now,
           "content": [{"attachment": {"contentType": "text/plain", "language": "ja", "url": b, "size": len(DOCUMENT_1K), "hash": sha1,
                                       "title": "経過記録", "creation": "2026-10-21T10:15:00+09:00"}}]}
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(DOCUMENT_1K).decode()}
    sset = {"resourceType": "List", "meta": {"profile": [MHD + "IHE.MHD.Minimal.SubmissionSet"]},
            "extension": [{"url": MHD + "ihe-sourceId", "valueIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:2.25.1"}}],
            "identifier": [{"use": "usual", "system": "urn:ietf:rfc:3986", "value": uuid_oid()}], "status": "current", "mode": "working",
            "code": {"coding": [{"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "submissionset"}]},
            "subject": subject, "date": now, "entry": [{"item": {"reference": d}}]}
    entry = lambda url, r: {"fullUrl": url, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
    return {"resourceType": "Bundle", "type": "transaction", "meta": {"profile": [MHD + "IHE.MHD.Minimal.ProvideBundle"]},
            "entry": [entry(s, sset), entry(d, doc), entry(b, binary)]}


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


def cluster_cpu_ms(data):
    """CPU of the whole cluster so far: its live processes, and (the postmaster's cutime/cstime) every backend
    that has exited — pooled connections come and go during a window."""
    with open(os.path.join(data, "postmaster.pid")) as f:
        postmaster = f.readline().strip()
    children = subprocess.run(["pgrep", "-P", postmaster], capture_output=True, text=True).stdout.split()
    with open(f"/proc/{postmaster}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    exited = (int(fields[13]) + int(fields[14])) * 1000 / os.sysconf("SC_CLK_TCK")  # cutime, cstime
    return cpu_ms([postmaster] + children) + exited


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--base", required=True)
    a.add_argument("--pg-port", required=True)
    a.add_argument("--data", required=True, help="the PostgreSQL data directory (its password file)")
    a.add_argument("--server-pid", type=int, required=True)
    a.add_argument("--count", type=int, default=200)
    a.add_argument("--warmup", type=int, default=50)
    a.add_argument("--scenarios", default="create,transaction", help="create, transaction, read, iti65 (the bench's ITI-65 row), "
                   "search (the bench's family row: GET Patient?family=…&_count=10 over its five seeded families; needs the bench's data)")
    a.add_argument("--clients", type=int, default=1, help="requests in flight at once")
    a.add_argument("--settle", type=float, help="seconds the window stays open after the last request (default: 2.5 for read, else 0)")
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

    def post(path, body):
        r = urllib.request.Request(base + path, data=json.dumps(body, ensure_ascii=False).encode(), method="POST")
        r.add_header("Authorization", "Bearer " + token)
        r.add_header("Content-Type", "application/fhir+json")
        with urllib.request.urlopen(r) as resp:
            body = resp.read()
            assert resp.status in (200, 201), resp.status
            return body

    def get(path):
        r = urllib.request.Request(base + path)
        r.add_header("Authorization", "Bearer " + token)
        with urllib.request.urlopen(r) as resp:
            resp.read()
            assert resp.status == 200, resp.status

    def audit_state():
        """WAL position, AuditEvents stored so far, the audit table's row updates (statistics: may lag ~1 s)."""
        line = sql("select pg_current_wal_lsn() - '0/0'::pg_lsn, (select coalesce(max(seq), 0) from fhir.audit_event), "
                   "(select n_tup_upd from pg_stat_user_tables where schemaname = 'fhir' and relname = 'audit_event')").strip()
        return [int(float(v)) for v in line.split("\t")]

    read_id = iti65_patient = None
    for scenario in o.scenarios.split(","):
        if scenario == "iti65":
            iti65_patient = iti65_patient or json.loads(post("Patient", patient(next_mrn())))["id"]
            send = lambda: post("", provide_bundle(iti65_patient))
        elif scenario == "search":
            families = iter(itertools.cycle(["五十嵐", "東海林", "勅使河原", "宇佐美", "小鳥遊"]))
            send = lambda: get("Patient?family=" + urllib.parse.quote(next(families)) + "&_count=10")
        elif scenario == "read":
            read_id = read_id or json.loads(post("Patient", patient(next_mrn())))["id"]
            send = lambda: get(f"Patient/{read_id}")
        else:
            send = (lambda: post("Patient", patient(next_mrn()))) if scenario == "create" else (lambda: post("", transaction(next_mrn)))
        settle = o.settle if o.settle is not None else (2.5 if scenario in ("read", "search") else 0)
        for _ in range(o.warmup):
            send()
        time.sleep(2.5)  # the warm-up's audit batches and the sealer's round out of the window
        if not o.cpu_only:
            sql("select pg_stat_statements_reset()")
        w0 = audit_state()
        s0, p0, t0 = cpu_ms([o.server_pid]), cluster_cpu_ms(o.data), time.monotonic()
        with ThreadPoolExecutor(o.clients) as pool:
            for f in [pool.submit(send) for _ in range(o.count)]:
                f.result()
        t1 = time.monotonic()
        time.sleep(settle)
        s1, p1 = cpu_ms([o.server_pid]), cluster_cpu_ms(o.data)
        w1 = audit_state()
        rows = "" if o.cpu_only else sql("select calls, round(total_exec_time::numeric, 1), wal_bytes, regexp_replace(left(query, 150), '\\s+', ' ', 'g') "
                   "from pg_stat_statements where query not like '%pg_stat_statements%' and query not like '%pg_current_wal_lsn%' order by calls desc, query")
        print(f"\n== {scenario}: {o.count} requests, {o.clients} client(s), {(t1 - t0) * 1000 / o.count:.1f} ms each (wall / requests), window +{settle} s")
        print(f"{'calls/req':>9}  {'exec ms/req':>11}  {'WAL B/req':>9}  statement")
        total = 0.0
        for line in rows.strip().splitlines():
            calls, ms, wal, query = line.split("\t", 3)
            per = int(calls) / o.count
            total += per
            print(f"{per:9.2f}  {float(ms) / o.count:11.3f}  {float(wal) / o.count:9.0f}  {query}")
        audits = w1[1] - w0[1]
        print(f"statements/request {total:.1f}; server CPU {(s1 - s0) / o.count:.2f} ms/request; "
              f"PostgreSQL CPU {(p1 - p0) / o.count:.2f} ms/request; loadavg {open('/proc/loadavg').read().strip()}")
        print(f"WAL {(w1[0] - w0[0]) / o.count:.0f} bytes/request; {audits} AuditEvents stored, "
              f"{(w1[0] - w0[0]) / max(audits, 1):.0f} bytes of WAL per AuditEvent; audit rows updated: {w1[2] - w0[2]}")


if __name__ == "__main__":
    main()
