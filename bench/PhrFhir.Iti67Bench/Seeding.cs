using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using PhrFhir.MhdBench;

namespace PhrFhir.Iti67Bench;

/// <summary>
/// Seeds through the FHIR API, as a document source would: transaction Bundles of Patients (conditional
/// creates on their MRN, so a second run finds the same ones) and of DocumentReferences in MHD Minimal shape
/// (subject, masterIdentifier, status current or superseded, type and category codes, date, an attachment
/// in a document repository). Documents go round-robin over the Patients, one in five superseded.
/// </summary>
public sealed class Seeding(HttpClient http, int batch, int senders)
{
    public const string MrnSystem = "urn:oid:1.2.392.100495.20.3.51.11312345678";
    public static string Mrn(int patient) => "I67-" + patient.ToString("D7", CultureInfo.InvariantCulture);

    static readonly string[] Families = ["山田", "佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "中村", "小林", "加藤"];
    static readonly (string System, string Code, string Display)[] Types =
    [
        ("http://jpfhir.jp/fhir/Common/CodeSystem/doc-typecodes", "53576-5", "検診・健診報告書"),
        ("http://jpfhir.jp/fhir/Common/CodeSystem/doc-typecodes", "57133-1", "診療情報提供書"),
        ("http://jpfhir.jp/fhir/Common/CodeSystem/doc-typecodes", "18842-5", "退院時サマリー"),
        ("http://loinc.org", "11502-2", "Laboratory report"),
    ];
    static readonly (string System, string Code, string Display)[] Categories =
    [
        ("http://jpfhir.jp/fhir/eCheckup/CodeSystem/checkup-report-category", "41", "事業者健診"),
        ("http://jpfhir.jp/fhir/eCheckup/CodeSystem/checkup-report-category", "11", "特定健診"),
        ("http://loinc.org", "11369-6", "History of Immunization"),
    ];

    public async Task<int> CountAsync(string type, CancellationToken ct)
    {
        var body = await SendAsync(HttpMethod.Get, $"{type}?_summary=count", null, ct);
        return (int)JsonNode.Parse(body)!["total"]!;
    }

    /// <summary>The ids of Patients 0…n-1, created where missing (If-None-Exist on the MRN).</summary>
    public async Task<List<string>> PatientsAsync(int n, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        var ids = new string[n];
        await InBatchesAsync(n, async (from, to) =>
        {
            var entries = new JsonArray();
            for (var i = from; i < to; i++)
            {
                var patient = new JsonObject
                {
                    ["resourceType"] = "Patient",
                    ["identifier"] = new JsonArray(new JsonObject { ["system"] = MrnSystem, ["value"] = Mrn(i) }),
                    ["name"] = new JsonArray(new JsonObject { ["family"] = Families[i % Families.Length], ["given"] = new JsonArray("太郎") }),
                    ["gender"] = i % 2 == 0 ? "male" : "female",
                    ["birthDate"] = new DateOnly(1950, 1, 1).AddDays(i % 18000).ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
                };
                entries.Add(new JsonObject
                {
                    ["fullUrl"] = "urn:uuid:" + Guid.NewGuid(),
                    ["resource"] = patient,
                    ["request"] = new JsonObject { ["method"] = "POST", ["url"] = "Patient", ["ifNoneExist"] = $"identifier={MrnSystem}|{Mrn(i)}" },
                });
            }
            var answer = JsonNode.Parse(await SendAsync(HttpMethod.Post, "", Transaction(entries), ct))!;
            var results = answer["entry"]!.AsArray();
            for (var i = from; i < to; i++)
            {
                // Created (201) or found by If-None-Exist (200, no location): the entry carries the Patient either way.
                ids[i] = (string)results[i - from]!["resource"]!["id"]!;
            }
        }, ct);
        Console.WriteLine($"patients: {n:N0} present in {sw.Elapsed.TotalSeconds:F0} s (conditional creates)");
        return [.. ids];
    }

    /// <summary>Documents number <paramref name="from"/>…<paramref name="to"/>-1, in transactions of <c>batch</c>, <c>senders</c> at a time.</summary>
    public async Task DocumentsAsync(List<string> patientIds, int from, int to, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        var done = 0;
        var report = Stopwatch.StartNew();
        await InBatchesAsync(to - from, async (a, b) =>
        {
            var entries = new JsonArray();
            for (var j = from + a; j < from + b; j++)
                entries.Add(new JsonObject
                {
                    ["fullUrl"] = "urn:uuid:" + Guid.NewGuid(),
                    ["resource"] = Document(j / patientIds.Count, j, patientIds[j % patientIds.Count]),
                    ["request"] = new JsonObject { ["method"] = "POST", ["url"] = "DocumentReference" },
                });
            await SendAsync(HttpMethod.Post, "", Transaction(entries), ct);
            var total = Interlocked.Add(ref done, b - a);
            lock (report)
                if (report.Elapsed.TotalSeconds >= 30 || from + total == to)
                {
                    Console.WriteLine($"  {from + total:N0} documents, {total / sw.Elapsed.TotalSeconds:F0}/s, load average {Proc.LoadAverage()}");
                    report.Restart();
                }
        }, ct);
        Console.WriteLine($"seeded {to - from:N0} documents in {sw.Elapsed.TotalMinutes:F1} min ({(to - from) / sw.Elapsed.TotalSeconds:F0}/s, transactions of {batch}, {senders} senders)");
    }

    /// <summary>Document <paramref name="j"/>, its patient's <paramref name="k"/>-th: kinds and dates vary along each patient's documents.</summary>
    static JsonObject Document(int k, int j, string patientId)
    {
        var type = Types[k % Types.Length];
        var category = Categories[k / 2 % Categories.Length];
        var date = new DateTimeOffset(2016, 4, 1, 9, 0, 0, TimeSpan.FromHours(9)).AddMinutes((k * 40_000L + j % 997 * 60) % (10 * 365 * 24 * 60));
        var id = Guid.NewGuid();
        return new JsonObject
        {
            ["resourceType"] = "DocumentReference",
            ["masterIdentifier"] = new JsonObject { ["use"] = "usual", ["system"] = "urn:ietf:rfc:3986", ["value"] = "urn:uuid:" + id },
            ["status"] = k % 5 == 4 ? "superseded" : "current",
            ["type"] = Coding(type),
            ["category"] = new JsonArray(Coding(category)),
            ["subject"] = new JsonObject { ["reference"] = "Patient/" + patientId },
            ["date"] = date.ToString("yyyy-MM-ddTHH:mm:sszzz", CultureInfo.InvariantCulture),
            ["content"] = new JsonArray(new JsonObject
            {
                ["attachment"] = new JsonObject
                {
                    ["contentType"] = "application/fhir+json",
                    ["language"] = "ja",
                    ["url"] = $"https://repository.example.jp/documents/{id}",
                    ["size"] = 4096 + j % 50000,
                    ["title"] = type.Display,
                    ["creation"] = date.ToString("yyyy-MM-ddTHH:mm:sszzz", CultureInfo.InvariantCulture),
                },
            }),
        };
    }

    static JsonObject Coding((string System, string Code, string Display) c) =>
        new() { ["coding"] = new JsonArray(new JsonObject { ["system"] = c.System, ["code"] = c.Code, ["display"] = c.Display }) };

    static string Transaction(JsonArray entries) =>
        new JsonObject { ["resourceType"] = "Bundle", ["type"] = "transaction", ["entry"] = entries }.ToJsonString();

    async Task InBatchesAsync(int n, Func<int, int, Task> send, CancellationToken ct)
    {
        var next = 0;
        var workers = Enumerable.Range(0, senders).Select(_ => Task.Run(async () =>
        {
            while (true)
            {
                var from = Interlocked.Add(ref next, batch) - batch;
                if (from >= n || ct.IsCancellationRequested) return;
                await send(from, Math.Min(n, from + batch));
            }
        }, ct)).ToArray();
        await Task.WhenAll(workers);
    }

    async Task<string> SendAsync(HttpMethod method, string path, string? body, CancellationToken ct)
    {
        for (var attempt = 1; ; attempt++)
        {
            using var request = new HttpRequestMessage(method, path);
            if (body is not null) request.Content = new StringContent(body, Encoding.UTF8, "application/fhir+json");
            using var response = await http.SendAsync(request, ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            if (response.IsSuccessStatusCode) return text;
            // Tokens live for minutes, seeding 1 M documents for hours: take a new one and send again.
            if ((int)response.StatusCode == 401 && attempt < 5)
            {
                var token = await Token.GetAsync(http, ct);
                lock (http) http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
                continue;
            }
            // 503: the embedded PostgreSQL restarting under memory pressure; a transaction is all or nothing, so send it again.
            if ((int)response.StatusCode == 503 && attempt < 5) { await Task.Delay(5000, ct); continue; }
            throw new InvalidOperationException($"{method} /{path} failed: {(int)response.StatusCode} {text[..Math.Min(text.Length, 800)]}");
        }
    }
}
