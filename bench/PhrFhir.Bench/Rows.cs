using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Numerics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PhrFhir.Bench;

/// <summary>
/// The data of issue #12's five rows, seeded through plain FHIR R4 REST (transaction Bundles, searches,
/// creates) so that any server takes it — ours, HAPI, Medplum:
/// <list type="bullet">
/// <item>the search row: <see cref="PerFamily"/> Patients in each of the <see cref="JapaneseData.SearchFamilies"/>
///   (transactions of 100); they are also the Patients the read row reads;</item>
/// <item>the ITI-67 row: one Patient (MRN <c>BENCH-ITI67</c>) with <see cref="Documents"/> current
///   DocumentReferences, sent as ITI-65-shaped transactions (a SubmissionSet List + 10 DocumentReferences
///   with their 1 kB Binaries);</item>
/// <item>the ITI-65 row: one Patient (MRN <c>BENCH-ITI65</c>) its submissions are about.</item>
/// </list>
/// Seeding tops up what is missing, so a second run over the same database only counts.
/// </summary>
public sealed class Rows(HttpClient http, bool mhdProfiles)
{
    public const int PerFamily = 2_000, Documents = 500;
    const int PatientsPerBundle = 100, DocumentsPerBundle = 10, Senders = 4;
    const string Mhd = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/";

    // The bench's own SubmissionSet sourceId: an OID under 2.25 from a fixed UUID (ITU-T X.667), naming no one else.
    static readonly string SourceId = UuidOid(Guid.Parse("3f9a6c1e-7b42-4d0e-9a55-8c21e4b7d913"));

    /// <summary>A 1 kB (1,024 bytes UTF-8) plain-text document: opaque to the server, as the issue's row has it.</summary>
    static readonly byte[] Document1k = OneKilobyte();

    public List<string> ReadIds { get; } = [];
    public string Iti67Patient { get; private set; } = "";
    public string Iti65Patient { get; private set; } = "";

    public async Task SeedAsync(CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        foreach (var family in JapaneseData.SearchFamilies)
        {
            var have = await CountAsync("Patient?family=" + Uri.EscapeDataString(family.Kanji), ct);
            if (have < PerFamily)
            {
                var runTag = DateTime.UtcNow.ToString("yyMMddHHmmss", CultureInfo.InvariantCulture);
                var bundles = (int)((PerFamily - have + PatientsPerBundle - 1) / PatientsPerBundle);
                var mrn = 0;
                await InParallelAsync(bundles, rnd =>
                {
                    var entries = Enumerable.Range(0, PatientsPerBundle).Select(_ => (
                        (string?)null,
                        JapaneseData.Patient(rnd, $"F{runTag}-{Interlocked.Increment(ref mrn):D6}", family), "Patient"));
                    return Transaction(entries);
                }, ct);
                Console.WriteLine($"  seeded {bundles * PatientsPerBundle:N0} Patients named {family.Kanji} ({family.Kana}); {sw.Elapsed.TotalSeconds:0} s so far");
            }
        }
        await FindReadIdsAsync(ct);

        Iti65Patient = await PatientAsync("BENCH-ITI65", ct);
        Iti67Patient = await PatientAsync("BENCH-ITI67", ct);
        var docs = await CountAsync($"DocumentReference?patient=Patient/{Iti67Patient}&status=current", ct);
        if (docs < Documents)
        {
            var bundles = (int)((Documents - docs + DocumentsPerBundle - 1) / DocumentsPerBundle);
            await InParallelAsync(bundles, _ => ProvideBundle(Iti67Patient, DocumentsPerBundle), ct);
            Console.WriteLine($"  seeded {bundles * DocumentsPerBundle:N0} DocumentReferences for Patient/{Iti67Patient}; {sw.Elapsed.TotalSeconds:0} s so far");
        }
        var families = await Task.WhenAll(JapaneseData.SearchFamilies.Select(f => CountAsync("Patient?family=" + Uri.EscapeDataString(f.Kanji), ct)));
        Console.WriteLine($"rows data: Patients per search family {string.Join(", ", families.Select(n => n.ToString("N0", CultureInfo.InvariantCulture)))}; " +
                          $"{await CountAsync($"DocumentReference?patient=Patient/{Iti67Patient}&status=current", ct):N0} current DocumentReferences of Patient/{Iti67Patient}; " +
                          $"{ReadIds.Count:N0} Patient ids to read ({sw.Elapsed.TotalSeconds:0.0} s)");
    }

    /// <summary>
    /// An ITI-65 Provide Document Bundle (MHD 4.2.3, Minimal metadata): a SubmissionSet List and
    /// <paramref name="documents"/> DocumentReferences, each with the Binary its attachment url names
    /// (urn:uuid). With <c>mhdProfiles</c> the Bundle and its entries declare the MHD Minimal profiles, as an
    /// MHD Document Source must; without, it is the same transaction undeclared, for a peer that has no MHD.
    /// </summary>
    public string ProvideBundle(string patientId, int documents = 1)
    {
        var now = DateTimeOffset.Now.ToString("yyyy-MM-ddTHH:mm:sszzz", CultureInfo.InvariantCulture);
        JsonObject Subject() => new() { ["reference"] = $"Patient/{patientId}" };
        JsonObject Meta(string profile) => new() { ["profile"] = new JsonArray(Mhd + profile) };
        var set = "urn:uuid:" + Guid.NewGuid();
        var entries = new JsonArray();
        var items = new JsonArray();
        var hash = Convert.ToBase64String(SHA1.HashData(Document1k)); // FHIR: base64 of the SHA-1 bytes
        for (var i = 0; i < documents; i++)
        {
            string doc = "urn:uuid:" + Guid.NewGuid(), bin = "urn:uuid:" + Guid.NewGuid();
            items.Add(new JsonObject { ["item"] = new JsonObject { ["reference"] = doc } });
            var documentReference = new JsonObject
            {
                ["resourceType"] = "DocumentReference",
                ["masterIdentifier"] = new JsonObject { ["use"] = "usual", ["system"] = "urn:ietf:rfc:3986", ["value"] = UuidOid(Guid.NewGuid()) },
                ["status"] = "current",
                ["type"] = Coding("http://loinc.org", "11506-3", "Progress note"),
                ["subject"] = Subject(),
                ["date"] = now,
                ["content"] = new JsonArray(new JsonObject
                {
                    ["attachment"] = new JsonObject
                    {
                        ["contentType"] = "text/plain",
                        ["language"] = "ja",
                        ["url"] = bin,
                        ["size"] = Document1k.Length,
                        ["hash"] = hash,
                        ["title"] = "経過記録",
                        ["creation"] = "2026-10-21T10:15:00+09:00",
                    },
                }),
            };
            var binary = new JsonObject { ["resourceType"] = "Binary", ["contentType"] = "text/plain", ["data"] = Convert.ToBase64String(Document1k) };
            if (mhdProfiles) documentReference["meta"] = Meta("IHE.MHD.Minimal.DocumentReference");
            entries.Add(Entry(doc, documentReference, "DocumentReference"));
            entries.Add(Entry(bin, binary, "Binary"));
        }
        var submissionSet = new JsonObject
        {
            ["resourceType"] = "List",
            ["extension"] = new JsonArray(new JsonObject
            {
                ["url"] = Mhd + "ihe-sourceId",
                ["valueIdentifier"] = new JsonObject { ["system"] = "urn:ietf:rfc:3986", ["value"] = SourceId },
            }),
            ["identifier"] = new JsonArray(new JsonObject { ["use"] = "usual", ["system"] = "urn:ietf:rfc:3986", ["value"] = UuidOid(Guid.NewGuid()) }),
            ["status"] = "current",
            ["mode"] = "working",
            ["code"] = Coding("https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "submissionset"),
            ["subject"] = Subject(),
            ["date"] = now,
            ["entry"] = items,
        };
        if (mhdProfiles) submissionSet["meta"] = Meta("IHE.MHD.Minimal.SubmissionSet");
        entries.Insert(0, Entry(set, submissionSet, "List"));
        var bundle = new JsonObject { ["resourceType"] = "Bundle", ["type"] = "transaction", ["entry"] = entries };
        if (mhdProfiles) bundle["meta"] = Meta("IHE.MHD.Minimal.ProvideBundle");
        return bundle.ToJsonString();
    }

    /// <summary>The Patient with this bench MRN, created if the server has none yet; its id.</summary>
    async Task<string> PatientAsync(string mrn, CancellationToken ct)
    {
        var found = await GetJsonAsync($"Patient?identifier={Uri.EscapeDataString(JapaneseData.MrnSystem + "|" + mrn)}", ct);
        if (found.RootElement.TryGetProperty("entry", out var entries) && entries.GetArrayLength() > 0)
            return entries[0].GetProperty("resource").GetProperty("id").GetString()!;
        using var content = new StringContent(JapaneseData.Patient(new Random(mrn.Length), mrn, JapaneseData.Families[0]), Encoding.UTF8);
        content.Headers.ContentType = Dataset.FhirJson;
        using var resp = await http.PostAsync("Patient", content, ct);
        var body = await resp.Content.ReadAsStringAsync(ct);
        if (!resp.IsSuccessStatusCode) throw new InvalidOperationException($"POST /Patient ({mrn}) answered {(int)resp.StatusCode}: {Dataset.Trim(body)}");
        // The id from Location (…/Patient/{id}/_history/1), else from the body.
        if (resp.Headers.Location is { } location)
        {
            var parts = location.ToString().Split('/');
            var at = Array.LastIndexOf(parts, "Patient");
            if (at >= 0 && at + 1 < parts.Length) return parts[at + 1];
        }
        return JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
    }

    /// <summary>Up to 2,000 ids of the search families' Patients, following the servers' next links.</summary>
    async Task FindReadIdsAsync(CancellationToken ct)
    {
        foreach (var family in JapaneseData.SearchFamilies)
        {
            string? url = $"Patient?family={Uri.EscapeDataString(family.Kanji)}&_count=200";
            for (var page = 0; page < 2 && url is not null; page++)
            {
                using var doc = await GetJsonAsync(url, ct);
                url = null;
                if (doc.RootElement.TryGetProperty("entry", out var entries))
                    foreach (var e in entries.EnumerateArray())
                        if (e.TryGetProperty("resource", out var r) && r.TryGetProperty("id", out var id)) ReadIds.Add(id.GetString()!);
                if (doc.RootElement.TryGetProperty("link", out var links))
                    foreach (var l in links.EnumerateArray())
                        if (l.GetProperty("relation").GetString() == "next") url = l.GetProperty("url").GetString();
            }
        }
        if (ReadIds.Count == 0) throw new InvalidOperationException("no Patient of the search families found to read");
    }

    async Task<long> CountAsync(string search, CancellationToken ct)
    {
        using var doc = await GetJsonAsync(search + "&_summary=count", ct);
        return doc.RootElement.TryGetProperty("total", out var t) ? t.GetInt64()
            : throw new InvalidOperationException($"GET {search}&_summary=count has no total");
    }

    async Task<JsonDocument> GetJsonAsync(string url, CancellationToken ct)
    {
        using var resp = await http.GetAsync(url, ct);
        var body = await resp.Content.ReadAsStringAsync(ct);
        if (!resp.IsSuccessStatusCode) throw new InvalidOperationException($"GET {url} answered {(int)resp.StatusCode}: {Dataset.Trim(body)}");
        return JsonDocument.Parse(body);
    }

    /// <summary>Posts <paramref name="count"/> transaction Bundles from <see cref="Senders"/> concurrent senders; any failure stops the run.</summary>
    async Task InParallelAsync(int count, Func<Random, string> bundle, CancellationToken ct)
    {
        var next = -1;
        var failures = new ConcurrentQueue<string>();
        await Task.WhenAll(Enumerable.Range(0, Senders).Select(s => Task.Run(async () =>
        {
            var rnd = new Random(4000 + s);
            while (Interlocked.Increment(ref next) < count && failures.IsEmpty)
            {
                using var content = new StringContent(bundle(rnd), Encoding.UTF8);
                content.Headers.ContentType = Dataset.FhirJson;
                using var resp = await http.PostAsync("", content, ct);
                if (!resp.IsSuccessStatusCode)
                    failures.Enqueue($"{(int)resp.StatusCode}: {Dataset.Trim(await resp.Content.ReadAsStringAsync(ct))}");
            }
        }, ct)));
        if (failures.TryPeek(out var first)) throw new InvalidOperationException($"seeding failed: a transaction Bundle answered {first}");
    }

    static string Transaction(IEnumerable<(string? FullUrl, string Resource, string Type)> entries)
    {
        var sb = new StringBuilder("""{"resourceType":"Bundle","type":"transaction","entry":[""");
        var first = true;
        foreach (var (fullUrl, resource, type) in entries)
        {
            if (!first) sb.Append(',');
            first = false;
            sb.Append('{');
            if (fullUrl is not null) sb.Append("\"fullUrl\":\"").Append(fullUrl).Append("\",");
            sb.Append("\"resource\":").Append(resource).Append(",\"request\":{\"method\":\"POST\",\"url\":\"").Append(type).Append("\"}}");
        }
        return sb.Append("]}").ToString();
    }

    static JsonObject Entry(string fullUrl, JsonObject resource, string type) => new()
    {
        ["fullUrl"] = fullUrl,
        ["resource"] = resource,
        ["request"] = new JsonObject { ["method"] = "POST", ["url"] = type },
    };

    static JsonObject Coding(string system, string code, string? display = null)
    {
        var coding = new JsonObject { ["system"] = system, ["code"] = code };
        if (display is not null) coding["display"] = display;
        return new JsonObject { ["coding"] = new JsonArray(coding) };
    }

    static string UuidOid(Guid uuid) =>
        "urn:oid:2.25." + new BigInteger(uuid.ToByteArray(bigEndian: true), isUnsigned: true, isBigEndian: true);

    static byte[] OneKilobyte()
    {
        var line = "健診結果の経過記録です。血圧、体重、血液検査の値に変わりはありません。\n"u8.ToArray();
        var bytes = new byte[1024];
        for (var i = 0; i < bytes.Length; i++) bytes[i] = line[i % line.Length];
        // Cut at a character boundary: replace a trailing partial UTF-8 sequence with spaces.
        var end = bytes.Length;
        while (end > 0 && (bytes[end - 1] & 0xC0) == 0x80) end--;
        if (end > 0 && bytes[end - 1] >= 0xC0) end--;
        for (var i = end; i < bytes.Length; i++) bytes[i] = (byte)' ';
        return bytes;
    }
}
