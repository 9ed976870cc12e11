using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Microsoft.Extensions.DependencyInjection;
using PhrFhir.Storage;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// Generated from GET /metadata at test time, so a search parameter added later is covered without
/// anyone remembering to: for every parameter the CapabilityStatement offers on the types a person's
/// data lives in — its values, :missing, modifiers, chains into and _has from the person's other
/// resources, _sort, _include(:iterate), _revinclude, _total, _summary=count, _elements and paging links
/// — and for every write verb on the person's resources, a requester who may not see that person's data
/// gets the same answers before and after the data exists (status, total, entries, links; Bundle ids,
/// times and meta dropped). The values searched for are read from the person's resources by the server's
/// own indexer, so each criterion would match them if they were visible.
/// </summary>
[Collection("server")]
public sealed class LeakSuiteTests(ServerFixture server)
{
    const string PersonSystem = "urn:oid:1.2.392.100495.20.3.51.11312345678";
    const string EmployerSystem = "urn:oid:1.2.392.100495.20.3.2";
    const string EmployerValue = "9912345678"; // test-employer's actor
    const string DocumentClass = "http://phrfhir.example/fhir/CodeSystem/phr-document-class";
    static readonly FhirJsonSerializer Serializer = new();

    /// <summary>A requester who may not see person P (besides <paramref name="Visible"/>), and the types its scopes let it search.</summary>
    sealed record Role(string Name, HttpClient Client, string[] Types, string[] Visible);

    sealed record Probe(Role Role, string Method, string Url, string? Body);

    [Fact]
    public async System.Threading.Tasks.Task A_requester_who_may_not_see_a_person_gets_the_same_answers_with_or_without_that_persons_data()
    {
        var run = Fhir.Unique("leak");
        var p = $"{run}-p";
        string Id(string name) => $"{run}-{name}";
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Anonymous.GetAsync("metadata"), HttpStatusCode.OK);

        // The employer's directory entry (the Consent names it) and the other person's Patient exist throughout.
        var employerOrg = await EnsureAsync(server.Operator, new Organization { Identifier = [new Identifier(EmployerSystem, EmployerValue)], Name = "株式会社テスト" }, $"identifier={EmployerSystem}|{EmployerValue}");
        await EnsureAsync(server.Http, new Patient { Identifier = [new Identifier(PersonSystem, "00012345")] }, $"identifier={PersonSystem}|00012345");

        // Person P's data: every id fixed in advance, so each request is the same in both runs.
        var patient = new Patient
        {
            Id = p,
            Identifier = [new Identifier(PersonSystem, run)],
            Name = [new HumanName { Family = "漏洩" + run, Given = ["花子"] }, new HumanName { Use = HumanName.NameUse.Usual, Family = "ロウエイ", Given = ["ハナコ"] }],
            Gender = AdministrativeGender.Female,
            BirthDate = "1980-04-01",
            Telecom = [new ContactPoint(ContactPoint.ContactPointSystem.Phone, null, "090-0000-" + run[^4..])],
            Address = [new Address { City = "千代田区", PostalCode = "100-0001", Country = "JP" }],
        };
        var consent = new Consent
        {
            Id = Id("consent"),
            Status = Consent.ConsentState.Active,
            Scope = new CodeableConcept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
            Category = [new CodeableConcept("http://loinc.org", "59284-0")],
            Patient = new ResourceReference($"Patient/{p}"),
            Policy = [new Consent.PolicyComponent { Uri = "http://phrfhir.example/fhir/policy/sharing" }],
            Provision = new Consent.provisionComponent
            {
                Type = Consent.ConsentProvisionType.Permit,
                Actor = [new Consent.provisionActorComponent { Role = new CodeableConcept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP"), Reference = new ResourceReference(employerOrg) }],
            },
        };
        Binary Bytes(string name, string text) => new() { Id = Id(name), ContentType = "text/plain", Data = Encoding.UTF8.GetBytes(text), SecurityContext = new ResourceReference($"Patient/{p}") };
        DocumentReference Document(string name, string binary, CodeableConcept? category, CodeableConcept? type) => new()
        {
            Id = Id(name),
            Status = DocumentReferenceStatus.Current,
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)),
            Subject = new ResourceReference($"Patient/{p}"),
            Category = category is null ? [] : [category],
            Type = type,
            Date = new DateTimeOffset(2024, 4, 1, 9, 0, 0, TimeSpan.FromHours(9)),
            Description = "健診結果 " + run,
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Url = $"Binary/{Id(binary)}", Language = "ja" } }],
        };
        var workBin = Bytes("workbin", "就業上の措置");
        var workDoc = Document("workdoc", "workbin", new CodeableConcept(DocumentClass, "work-measure"), null);
        var medBin = Bytes("medbin", "精密検査が必要です");
        var medDoc = Document("meddoc", "medbin", null, new CodeableConcept("http://loinc.org", "53576-5", "Personal health monitoring report"));
        var encounter = new Encounter
        {
            Id = Id("enc"),
            Status = Encounter.EncounterStatus.Finished,
            Class = new Coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB"),
            Subject = new ResourceReference($"Patient/{p}"),
            Period = new Period { Start = "2024-04-01T09:00:00+09:00", End = "2024-04-01T10:00:00+09:00" },
        };
        var observation = new Observation
        {
            Id = Id("obs"),
            Status = ObservationStatus.Final,
            Category = [new CodeableConcept("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")],
            Code = new CodeableConcept("http://loinc.org", "2339-0", "血糖"),
            Subject = new ResourceReference($"Patient/{p}"),
            Encounter = new ResourceReference($"Encounter/{encounter.Id}"),
            Effective = new FhirDateTime("2024-04-01T09:30:00+09:00"),
            Value = new Quantity(98, "mg/dL", "http://unitsofmeasure.org"),
        };
        var condition = new Condition
        {
            Id = Id("cond"),
            ClinicalStatus = new CodeableConcept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            Code = new CodeableConcept("http://snomed.info/sct", "44054006", "糖尿病"),
            Subject = new ResourceReference($"Patient/{p}"),
            Encounter = new ResourceReference($"Encounter/{encounter.Id}"),
            RecordedDate = "2024-04-01",
        };
        var list = new List
        {
            Id = Id("list"),
            Status = List.ListStatus.Current,
            Mode = ListMode.Working,
            Code = new CodeableConcept("https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "submissionset"),
            Subject = new ResourceReference($"Patient/{p}"),
            Date = "2024-04-01",
            Entry = [new List.EntryComponent { Item = new ResourceReference($"DocumentReference/{medDoc.Id}") }],
        };
        Resource[] all = [patient, consent, workBin, workDoc, medBin, medDoc, encounter, observation, condition, list];

        // The roles, and what of P each may see (that is in both runs, so it is no difference).
        string[] everything = [.. all.Select(r => r.TypeName).Distinct()];
        using var otherInstitution = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        using var employer = await server.ClientAsync("test-employer");
        using var otherPerson = await server.ClientAsync("test-person");
        var roles = new[]
        {
            new Role("other institution", otherInstitution, everything, []),
            new Role("another person", otherPerson, everything, []),
            new Role("employer (work-measure Consent)", employer, ["DocumentReference", "Binary", "Patient"], [workDoc.Id!, workBin.Id!]),
            new Role("operator without break-glass", server.Operator, everything, [patient.Id!, consent.Id!]),
        };
        var probes = roles.ToDictionary(r => r, r => Generate(r, cs, all, run));

        // Run 1 for each role once what of P it may see exists, and before the rest of P is written.
        var answers = new Dictionary<Probe, string>();
        async System.Threading.Tasks.Task Run(Role role, bool writes, Func<Probe, bool>? only = null)
        {
            foreach (var (probe, answer) in await SendAllAsync(probes[role].Where(x => (x.Method != "GET") == writes && (only is null || only(x)))))
                if (!answers.TryAdd(probe, answer) && answers[probe] != answer)
                    Mismatches.Add($"[{role.Name}] {probe.Method} {probe.Url}\n   without P: {answers[probe]}\n   with P:    {answer}");
        }
        async System.Threading.Tasks.Task WriteAsync(params Resource[] resources)
        {
            foreach (var r in resources)
            {
                var request = new HttpRequestMessage(HttpMethod.Put, $"{r.TypeName}/{r.Id}") { Content = Fhir.Json(r) };
                request.Headers.Add("X-Break-Glass", "leak suite: the person's data"); // the only way to choose every id
                var response = await server.Operator.SendAsync(request);
                // 201; a 200 would mean a role's PUT in run 1 created it — reported below as a difference.
                Assert.True(response.IsSuccessStatusCode, $"{r.TypeName}/{r.Id}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            }
        }
        var started = DateTime.UtcNow;
        foreach (var role in roles.Where(r => r.Visible.Length == 0)) { await Run(role, false); await Run(role, true); }
        // The employer's requests on Patient (which it never sees) also before anything of P exists: they are
        // compared against its baseline below, which holds P's Patient, and against run 2.
        static bool OnPatient(Probe x) => x.Url.StartsWith("Patient?", StringComparison.Ordinal) || x.Url.StartsWith("Patient/", StringComparison.Ordinal);
        await Run(roles[2], false, OnPatient); await Run(roles[2], true, OnPatient);
        // The registry accepts a document only for a registered Patient (docs/mhd.md "Registry rules"), so
        // P's Patient comes first. The operator sees it and the Consent, nothing else of P.
        await WriteAsync(patient, consent);
        await Run(roles[3], false); await Run(roles[3], true);
        // The employer's baseline: P's Patient (hidden from it) and the work-measure document the Consent
        // shows it; what is compared is the effect of the rest of P's data, all hidden from it.
        await WriteAsync(workBin, workDoc);
        await Run(roles[2], false); await Run(roles[2], true);
        await WriteAsync(medBin, medDoc, encounter, observation, condition, list);
        // Run 2: every search first, then the writes (a write that wrongly succeeded must not change the searches).
        foreach (var role in roles) await Run(role, false);
        foreach (var role in roles) await Run(role, true);

        var count = probes.Values.Sum(x => x.Count);
        Assert.True(Mismatches.Count == 0, $"{Mismatches.Count} of {count} generated requests told P's data apart:\n" + string.Join("\n", Mismatches.Take(25)));
        Assert.True(count > 1000, $"only {count} requests were generated from the CapabilityStatement");
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(120), $"the suite took {DateTime.UtcNow - started}");
    }

    List<string> Mismatches { get; } = [];

    /// <summary>The one resource these criteria find, created by <paramref name="client"/> when there is none.</summary>
    static async Task<string> EnsureAsync(HttpClient client, Resource r, string criteria)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, r.TypeName) { Content = Fhir.Json(r) };
        request.Headers.TryAddWithoutValidation("If-None-Exist", criteria);
        var response = await client.SendAsync(request);
        Assert.True(response.IsSuccessStatusCode, $"{r.TypeName}?{criteria}: {(int)response.StatusCode}");
        return $"{r.TypeName}/{(await Fhir.ReadAsync<Resource>(response)).Id}";
    }

    /// <summary>Every request this role makes: searches from the CapabilityStatement × P's values, then writes on P's hidden resources.</summary>
    List<Probe> Generate(Role role, CapabilityStatement cs, Resource[] all, string marker)
    {
        var offered = cs.Rest[0].Resource.ToDictionary(r => r.Type!, r => r.SearchParam.ToDictionary(s => s.Name, s => s.Type!.Value));
        var indexer = server.Services.GetRequiredService<FhirStore>().Indexer;
        // Type.code → the values P's resources hold for it, as the server indexes them.
        var values = new Dictionary<string, List<string>>();
        var references = new List<(string Source, string SourceId, string Param, string TargetType, string TargetId)>();
        void Value(string key, string v) { if (!values.TryGetValue(key, out var l)) values[key] = l = []; if (!l.Contains(v)) l.Add(v); }
        foreach (var r in all)
        {
            Value($"{r.TypeName}._id", r.Id);
            var rows = indexer.Extract(r);
            foreach (var s in rows.Strings) Value(s.Param, Escape(s.Exact));
            foreach (var t in rows.Tokens.Where(t => t.Code is not null)) Value(t.Param, t.System is null ? Escape(t.Code!) : $"{Escape(t.System)}|{Escape(t.Code!)}");
            foreach (var d in rows.Dates.Where(d => d.Low != DateTimeOffset.MinValue)) Value(d.Param, "ge" + d.Low.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture));
            foreach (var n in rows.Numbers) Value(n.Param, n.Value.ToString(CultureInfo.InvariantCulture));
            foreach (var u in rows.Uris) Value(u.Param, Escape(u.Uri));
            foreach (var x in rows.References)
            {
                Value(x.Param, Escape(x.Target));
                var code = x.Param[(r.TypeName.Length + 1)..];
                if (x.Target.Split('/') is [var type, var id] && all.Any(a => a.TypeName == type && a.Id == id) && offered[r.TypeName].ContainsKey(code))
                    references.Add((r.TypeName, r.Id, code, type, id));
            }
        }
        string? First(string type, string code) => values.TryGetValue($"{type}.{code}", out var l) ? l[0] : null;
        var probes = new List<Probe>();
        // Result parameters rotate over the value searches, so each kind of answer is compared many times.
        string[] results = ["&_total=accurate", "&_summary=count", "&_total=estimate&_elements=id&_sort=-{code}", "&_count=1&_total=accurate&_sort={code}"];
        void Get(string url) => probes.Add(new Probe(role, "GET", url, null));
        var types = role.Types.Where(offered.ContainsKey).ToList();
        foreach (var type in types)
            foreach (var (code, kind) in offered[type])
            {
                // :missing the way P's resources would match it: false where they hold the parameter, true where not.
                var v = First(type, code);
                Get($"{type}?{code}:missing={(v is null ? "true" : "false")}&_count=5&_total=accurate");
                if (v is null) continue;
                Get($"{type}?{code}={Uri.EscapeDataString(v)}" + results[probes.Count % results.Length].Replace("{code}", code));
                if (kind == SearchParamType.String) Get($"{type}?{code}:{(probes.Count % 2 == 0 ? "exact" : "contains")}={Uri.EscapeDataString(v)}");
                if (kind == SearchParamType.Token && code != "_id") Get($"{type}?{code}:not={Uri.EscapeDataString(v)}&_count=1&_total=accurate");
            }
        foreach (var (source, sourceId, param, targetType, targetId) in references.Distinct())
        {
            // Chains from the source into P's resource: the target must be visible for them to match.
            if (types.Contains(source))
            {
                foreach (var code in offered[targetType].Keys)
                    if (First(targetType, code) is { } v)
                        Get($"{source}?{param}{(probes.Count % 2 == 0 ? ":" + targetType : "")}.{code}={Uri.EscapeDataString(v)}&_total=accurate");
                Get($"{source}?{param}={targetType}/{targetId}&_include={source}:{param}&_total=accurate");
                Get($"{source}?{param}={targetType}/{targetId}&_include:iterate={source}:{param}&_revinclude={source}:{param}");
            }
            // _has from P's resource onto its target, and what it adds to the target by _revinclude.
            if (types.Contains(targetType))
            {
                foreach (var code in offered[source].Keys)
                    if (First(source, code) is { } v)
                        Get($"{targetType}?_has:{source}:{param}:{code}={Uri.EscapeDataString(v)}&_total=accurate");
                Get($"{targetType}?_id={targetId}&_revinclude={source}:{param}&_total=accurate");
            }
        }
        // Writes on each of P's resources the role may not see: PUT, PATCH, DELETE, conditional DELETE.
        const string Patch = """{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"add"},{"name":"path","valueString":"Resource"},{"name":"name","valueString":"language"},{"name":"value","valueCode":"ja"}]}]}""";
        foreach (var r in all.Where(r => !role.Visible.Contains(r.Id) && !all.Any(v => role.Visible.Contains(v.Id) && v.TypeName == r.TypeName)))
        {
            probes.Add(new Probe(role, "PUT", $"{r.TypeName}/{r.Id}", Serializer.SerializeToString(r)));
            probes.Add(new Probe(role, "PATCH", $"{r.TypeName}/{r.Id}", Patch));
            probes.Add(new Probe(role, "DELETE", $"{r.TypeName}/{r.Id}", null));
            // Criteria only P's resources meet (their values name P's ids): nothing of the role's own is deleted.
            if (offered[r.TypeName].Keys.FirstOrDefault(c => c != "_id" && First(r.TypeName, c)?.Contains(marker, StringComparison.Ordinal) == true) is { } code)
                probes.Add(new Probe(role, "DELETE", $"{r.TypeName}?{code}={Uri.EscapeDataString(First(r.TypeName, code)!)}", null));
        }
        // Every operation /metadata declares on a type of P's data: at type level and on each of P's resources, by GET and
        // by POST of an empty Parameters (and $ihe-pix for P's identifier). None may answer differently once P exists.
        const string NoParameters = """{"resourceType":"Parameters"}""";
        var operations = cs.Rest[0].Resource.ToDictionary(r => r.Type!, r => r.Operation.Select(o => "$" + o.Name).ToList());
        foreach (var r in all.Where(r => types.Contains(r.TypeName)))
            foreach (var op in operations[r.TypeName])
                foreach (var url in (string[])[$"{r.TypeName}/{op}", $"{r.TypeName}/{r.Id}/{op}"])
                {
                    Get(url);
                    probes.Add(new Probe(role, "POST", url, NoParameters));
                }
        if (operations.GetValueOrDefault("Patient")?.Contains("$ihe-pix") == true && types.Contains("Patient"))
            Get($"Patient/$ihe-pix?sourceIdentifier={Uri.EscapeDataString(PersonSystem + "|" + marker)}");
        return [.. probes.Distinct()];
    }

    static string Escape(string s) => s.Replace("\\", "\\\\").Replace(",", "\\,").Replace("$", "\\$").Replace("|", "\\|");

    /// <summary>Sends the probes twelve at a time; the answers in a form that keeps what they disclose.</summary>
    static async Task<List<(Probe, string)>> SendAllAsync(IEnumerable<Probe> probes)
    {
        using var gate = new SemaphoreSlim(12);
        return [.. await System.Threading.Tasks.Task.WhenAll(probes.Select(async probe =>
        {
            await gate.WaitAsync();
            try
            {
                var request = new HttpRequestMessage(new HttpMethod(probe.Method), probe.Url);
                if (probe.Body is not null) request.Content = Fhir.Json(probe.Body);
                var response = await probe.Role.Client.SendAsync(request);
                return (probe, Normalise((int)response.StatusCode, await response.Content.ReadAsStringAsync()));
            }
            finally { gate.Release(); }
        }))];
    }

    /// <summary>Status, then for a Bundle its total, entries and links; for an OperationOutcome its issues. Ids, times and meta of the answer itself are dropped.</summary>
    static string Normalise(int status, string body)
    {
        if (body.Length == 0) return status.ToString(CultureInfo.InvariantCulture);
        using var json = JsonDocument.Parse(body);
        var root = json.RootElement;
        var sb = new StringBuilder().Append(status);
        switch (root.GetProperty("resourceType").GetString())
        {
            case "Bundle":
                if (root.TryGetProperty("total", out var total)) sb.Append(" total=").Append(total.GetInt32());
                foreach (var link in root.TryGetProperty("link", out var links) ? links.EnumerateArray() : default)
                    sb.Append(' ').Append(link.GetProperty("relation").GetString()).Append('=').Append(link.GetProperty("url").GetString());
                foreach (var entry in root.TryGetProperty("entry", out var entries) ? entries.EnumerateArray() : default)
                    sb.Append(" entry=").Append(entry.TryGetProperty("fullUrl", out var f) ? f.GetString() : null)
                      .Append(entry.TryGetProperty("response", out var r) ? r.GetProperty("status").GetString() : null);
                break;
            case "OperationOutcome":
                foreach (var issue in root.GetProperty("issue").EnumerateArray())
                    sb.Append(' ').Append(issue.GetProperty("code").GetString()).Append(": ").Append(issue.TryGetProperty("diagnostics", out var d) ? d.GetString() : "");
                break;
            default:
                sb.Append(' ').Append(Regex.Replace(body, "\"(id|lastUpdated|versionId)\":\"[^\"]*\"", ""));
                break;
        }
        return sb.ToString();
    }
}
