using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;

namespace PhrFhir.MhdBench;

/// <summary>
/// Scenario "notify" (docs/subscriptions.md, "Latency"): a rest-hook Subscription to the patient's
/// documents (DSUBm patient-dependent topic, id-only) with a receiver in this process (HttpListener on
/// 127.0.0.1), then ITI-105 text documents published open-loop at a fixed rate. For each document: from
/// its create's response (the write has committed by then) to the notification naming it at the
/// receiver — the commit → receiver latency; the figure from the request's start is printed beside it.
/// </summary>
public static class NotificationLatency
{
    const string Topic = "https://profiles.ihe.net/ITI/DSUBm/SubscriptionTopic/DSUBm-SubscriptionTopic-DocumentReference-PatientDependent";
    const string Backport = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";

    public static async Task<int> RunAsync(HttpClient http, string patientId, double rate, double seconds, CancellationToken ct)
    {
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        using var listener = new HttpListener();
        listener.Prefixes.Add($"http://127.0.0.1:{port}/hook/");
        listener.Start();
        var arrivals = new ConcurrentDictionary<string, long>();
        var receiving = Task.Run(async () =>
        {
            while (listener.IsListening)
            {
                HttpListenerContext context;
                try { context = await listener.GetContextAsync(); }
                catch (Exception) when (!listener.IsListening) { return; }
                catch (HttpListenerException) { return; }
                var at = Stopwatch.GetTimestamp();
                using (var reader = new StreamReader(context.Request.InputStream, Encoding.UTF8))
                {
                    var bundle = JsonNode.Parse(await reader.ReadToEndAsync(ct))!;
                    foreach (var p in bundle["entry"]![0]!["resource"]!["parameter"]!.AsArray())
                        if ((string?)p!["name"] == "notification-event")
                            foreach (var part in p["part"]!.AsArray())
                                if ((string?)part!["name"] == "focus")
                                    arrivals.TryAdd(((string)part["valueReference"]!["reference"]!).Split('/')[^1], at);
                }
                context.Response.StatusCode = 200;
                context.Response.Close();
            }
        }, ct);

        var subscription = new JsonObject
        {
            ["resourceType"] = "Subscription",
            ["status"] = "requested",
            ["reason"] = "bench: notification latency",
            ["criteria"] = Topic,
            ["_criteria"] = new JsonObject { ["extension"] = new JsonArray(new JsonObject { ["url"] = Backport + "backport-filter-criteria", ["valueString"] = $"DocumentReference?patient=Patient/{patientId}" }) },
            ["channel"] = new JsonObject
            {
                ["type"] = "rest-hook",
                ["endpoint"] = $"http://127.0.0.1:{port}/hook/bench",
                ["payload"] = "application/fhir+json",
                ["_payload"] = new JsonObject { ["extension"] = new JsonArray(new JsonObject { ["url"] = Backport + "backport-payload-content", ["valueCode"] = "id-only" }) },
                ["extension"] = new JsonArray(new JsonObject { ["url"] = Backport + "backport-max-count", ["valuePositiveInt"] = 100 }),
            },
        };
        using var created = await http.PostAsync("Subscription", new StringContent(subscription.ToJsonString(), Encoding.UTF8, "application/fhir+json"), ct);
        var createdBody = await created.Content.ReadAsStringAsync(ct);
        if (!created.IsSuccessStatusCode) { Console.WriteLine($"notify: subscribing failed: {(int)created.StatusCode} {createdBody}"); return 1; }
        var id = (string)JsonNode.Parse(createdBody)!["id"]!;
        for (var i = 0; i < 300 && await StatusAsync(http, id, ct) == "requested"; i++) await Task.Delay(100, ct);
        Console.WriteLine($"notify: Subscription/{id} {await StatusAsync(http, id, ct)}, receiver http://127.0.0.1:{port}/hook/, {rate:0} documents/s for {seconds:0} s");

        var total = (int)(rate * seconds);
        var writes = new ConcurrentDictionary<string, (long Start, long Committed)>();
        var errors = 0;
        var clock = Stopwatch.StartNew();
        var inFlight = new List<Task>();
        for (var i = 0; i < total; i++)
        {
            var due = TimeSpan.FromSeconds(i / rate) - clock.Elapsed;
            if (due > TimeSpan.Zero) await Task.Delay(due, ct);
            inFlight.Add(Task.Run(async () =>
            {
                var start = Stopwatch.GetTimestamp();
                var doc = new JsonObject
                {
                    ["resourceType"] = "DocumentReference",
                    ["status"] = "current",
                    ["masterIdentifier"] = new JsonObject { ["system"] = "urn:ietf:rfc:3986", ["value"] = "urn:oid:2.25." + new System.Numerics.BigInteger(Guid.NewGuid().ToByteArray(), isUnsigned: true) },
                    ["subject"] = new JsonObject { ["reference"] = "Patient/" + patientId },
                    ["type"] = new JsonObject { ["coding"] = new JsonArray(new JsonObject { ["system"] = "http://loinc.org", ["code"] = "53576-5" }) },
                    ["content"] = new JsonArray(new JsonObject { ["attachment"] = new JsonObject { ["contentType"] = "text/plain", ["data"] = Convert.ToBase64String(Encoding.UTF8.GetBytes("健康診断結果 " + Guid.NewGuid())) } }),
                };
                using var response = await http.PostAsync("DocumentReference", new StringContent(doc.ToJsonString(), Encoding.UTF8, "application/fhir+json"), ct);
                var committed = Stopwatch.GetTimestamp();
                if (!response.IsSuccessStatusCode)
                {
                    if (Interlocked.Increment(ref errors) == 1) Console.WriteLine($"notify: first error {(int)response.StatusCode} {await response.Content.ReadAsStringAsync(ct)}");
                    return;
                }
                writes[(string)JsonNode.Parse(await response.Content.ReadAsStringAsync(ct))!["id"]!] = (start, committed);
            }, ct));
        }
        await Task.WhenAll(inFlight);
        var offered = total / clock.Elapsed.TotalSeconds;
        for (var i = 0; i < 600 && writes.Keys.Any(k => !arrivals.ContainsKey(k)); i++) await Task.Delay(100, ct);
        listener.Stop();
        await receiving.ContinueWith(_ => { }, TaskScheduler.Default);

        var fromCommit = writes.Where(w => arrivals.ContainsKey(w.Key)).Select(w => Math.Max(0, Stopwatch.GetElapsedTime(w.Value.Committed, arrivals[w.Key]).TotalMilliseconds)).Order().ToList();
        var fromStart = writes.Where(w => arrivals.ContainsKey(w.Key)).Select(w => Stopwatch.GetElapsedTime(w.Value.Start, arrivals[w.Key]).TotalMilliseconds).Order().ToList();
        var writeMs = writes.Values.Select(w => Stopwatch.GetElapsedTime(w.Start, w.Committed).TotalMilliseconds).Order().ToList();
        static double P(List<double> v, double p) => v.Count == 0 ? double.NaN : v[Math.Min(v.Count - 1, (int)Math.Ceiling(p / 100 * v.Count) - 1)];
        Console.WriteLine($"notify: {writes.Count} documents written ({offered:F1}/s offered, {errors} errors), {fromCommit.Count} notified, {writes.Count - fromCommit.Count} missing");
        Console.WriteLine($"notify: write          p50 {P(writeMs, 50),6:F0} ms  p95 {P(writeMs, 95),6:F0} ms  p99 {P(writeMs, 99),6:F0} ms");
        Console.WriteLine($"notify: commit→receiver p50 {P(fromCommit, 50),6:F0} ms  p95 {P(fromCommit, 95),6:F0} ms  p99 {P(fromCommit, 99),6:F0} ms");
        Console.WriteLine($"notify: request→receiver p50 {P(fromStart, 50),6:F0} ms  p95 {P(fromStart, 95),6:F0} ms  p99 {P(fromStart, 99),6:F0} ms");
        return writes.Count == fromCommit.Count && errors == 0 ? 0 : 1;
    }

    static async Task<string> StatusAsync(HttpClient http, string id, CancellationToken ct) =>
        (string)JsonNode.Parse(await http.GetStringAsync("Subscription/" + id, ct))!["status"]!;
}
