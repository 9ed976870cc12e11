using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// Role × interaction, one cell per row: what each kind of client may do (Security/AccessPolicy). The
/// person's rows are about their own records ("own") and someone else's ("other"); "hidden" is a 404 or
/// an answer that shows none of it, and no answer ever contains what the client may not see.
/// </summary>
[Collection("server")]
public sealed class RoleMatrixTests(ServerFixture server)
{
    sealed record World(Patient Own, Patient Other, Observation OwnObs, Observation OtherObs, DocumentReference OwnDoc, DocumentReference OtherDoc);

    static World? _world;

    async Task<World> WorldAsync()
    {
        if (_world is not null) return _world;
        var http = server.Http;
        var ownRequest = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient { Identifier = [new Identifier("urn:oid:1.2.392.100495.20.3.51.11312345678", "00012345")] }),
        };
        ownRequest.Headers.TryAddWithoutValidation("If-None-Exist", "identifier=urn:oid:1.2.392.100495.20.3.51.11312345678|00012345");
        var own = await Fhir.ReadAsync<Patient>(await http.SendAsync(ownRequest));
        var other = await Fhir.ExpectAsync<Patient>(await http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("他") }] })), HttpStatusCode.Created);
        async Task<Observation> Obs(Patient p) => await Fhir.ExpectAsync<Observation>(await http.PostAsync("Observation", Fhir.Json(new Observation
        {
            Status = ObservationStatus.Final,
            Code = new CodeableConcept("http://loinc.org", "2339-0"),
            Subject = new ResourceReference($"Patient/{p.Id}"),
        })), HttpStatusCode.Created);
        async Task<DocumentReference> Doc(Patient p) => await Fhir.ExpectAsync<DocumentReference>(await http.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            Subject = new ResourceReference($"Patient/{p.Id}"),
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Data = "健診"u8.ToArray() } }],
        })), HttpStatusCode.Created);
        return _world = new World(own, other, await Obs(own), await Obs(other), await Doc(own), await Doc(other));
    }

    public static TheoryData<string, string, string, string> Cells()
    {
        var data = new TheoryData<string, string, string, string>();
        // (client, method, path with {own}/{other}/{ownObs}/{otherObs}/{ownDoc}/{otherDoc}/{ownBin}/{otherBin}, expected: allowed | denied | hidden)
        // Everything in the world was written by the fixture's institution; no Consent names anyone here
        // (ConsentTests and PcfConsentTests grant and revoke).
        string[] reads =
        [
            "GET Patient/{own}", "GET Patient/{other}", "GET Observation/{otherObs}", "GET Observation/{ownObs}/_history",
            "GET Observation/{otherObs}/_history/1", "GET Observation?subject=Patient/{other}", "GET Observation?patient.identifier=urn:oid:1.2.392.100495.20.3.51.11312345678|00012345",
            "GET Patient?_id={own}&_revinclude=Observation:patient", "GET Observation?_id={ownObs}&_include=Observation:patient", "GET Observation/_history",
            "GET DocumentReference/{otherDoc}", "GET {otherBin}", "GET {ownBin}", "GET Observation?_count=1", "GET Observation?_count=1&_offset=1&_total=accurate",
        ];
        foreach (var r in reads)
        {
            var (method, path) = (r.Split(' ')[0], r.Split(' ')[1]);
            var type = path.TrimStart('{').Split('/', '?', '}')[0] switch { "ownBin" or "otherBin" => "Binary", var t => t };
            data.Add(ServerFixture.InstitutionClient, method, path, "allowed"); // the writer reads what it wrote
            data.Add("test-person", method, path, path.Contains("{other") ? "hidden" : "allowed");
            // The operator administers registrations; medical content only when breaking the glass.
            data.Add("test-operator", method, path, type == "Patient" ? "allowed" : "hidden");
            data.Add("test-operator+btg", method, path, "allowed");
            // Without a Consent, a physician sees nothing; the employer and the other institution neither,
            // and their scopes stop them first where they lack the type.
            data.Add("test-physician", method, path, "hidden");
            data.Add("test-employer", method, path, type is "Patient" or "DocumentReference" or "Binary" ? "hidden" : "denied");
            data.Add("test-institution-reader", method, path, type is "Patient" or "Observation" ? "hidden" : "denied");
        }
        // Writes: a new Observation of the person ("own"), alone or in a transaction; deleting someone's.
        foreach (var write in new[] { "POST Observation", "POST " })
        {
            var (method, path) = (write.Split(' ')[0], write.Split(' ')[1]);
            data.Add(ServerFixture.InstitutionClient, method, path, "allowed");
            data.Add("test-person", method, path, "allowed");
            data.Add("test-operator", method, path, "denied"); // medical content
            data.Add("test-operator+btg", method, path, "allowed");
            data.Add("test-physician", method, path, "denied"); // user/*.rs
            data.Add("test-employer", method, path, "denied");
            data.Add("test-institution-reader", method, path, "denied");
        }
        data.Add("test-operator", "POST", "Patient", "allowed");
        data.Add("test-person", "DELETE", "Observation/{otherObs}", "hidden");
        data.Add("test-physician", "DELETE", "Observation/{otherObs}", "denied");
        data.Add("test-institution-reader", "DELETE", "Observation/{otherObs}", "denied");
        return data;
    }

    [Theory]
    [MemberData(nameof(Cells))]
    public async System.Threading.Tasks.Task Each_role_gets_exactly_what_the_rules_allow(string client, string method, string path, string expected)
    {
        var w = await WorldAsync();
        var url = path.Replace("{own}", w.Own.Id).Replace("{other}", w.Other.Id).Replace("{ownObs}", w.OwnObs.Id).Replace("{otherObs}", w.OtherObs.Id)
            .Replace("{ownDoc}", w.OwnDoc.Id).Replace("{otherDoc}", w.OtherDoc.Id)
            .Replace("{ownBin}", w.OwnDoc.Content[0].Attachment.Url).Replace("{otherBin}", w.OtherDoc.Content[0].Attachment.Url);
        using var http = await server.ClientAsync(client.Replace("+btg", ""));
        var request = new HttpRequestMessage(new HttpMethod(method), url);
        if (client.EndsWith("+btg", StringComparison.Ordinal)) request.Headers.Add("X-Break-Glass", "matrix test: emergency care");
        if (method == "POST")
            request.Content = path == "Patient" ? Fhir.Json(new Patient { Name = [new HumanName { Family = "登録" }] })
                : path == ""
                ? Fhir.Json(new Bundle { Type = Bundle.BundleType.Transaction, Entry = [new Bundle.EntryComponent { Resource = new Observation { Status = ObservationStatus.Final, Code = new CodeableConcept { Text = "x" }, Subject = new ResourceReference($"Patient/{w.Own.Id}") }, Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Observation" } }] })
                : Fhir.Json(new Observation { Status = ObservationStatus.Final, Code = new CodeableConcept { Text = "x" }, Subject = new ResourceReference($"Patient/{w.Own.Id}") });
        var response = await http.SendAsync(request);
        var cell = $"[{client} {method} {path}]";
        var body = await response.Content.ReadAsStringAsync();
        // What the answer discloses: a searchset's entries (its links only echo the request), else the whole body.
        if (body.Contains("\"searchset\"", StringComparison.Ordinal))
            body = string.Join("\n", (await Fhir.ReadAsync<Bundle>(response)).Entry.Select(e => e.FullUrl + " " + e.Resource?.TypeName + "/" + e.Resource?.Id));
        // What each client must never be shown, whatever the cell.
        var bin = (DocumentReference d) => d.Content[0].Attachment.Url.Split('/')[^1];
        string[] medical = [w.OwnObs.Id, w.OtherObs.Id, w.OwnDoc.Id, w.OtherDoc.Id, bin(w.OwnDoc), bin(w.OtherDoc)];
        var forbidden = client switch
        {
            "test-person" => [w.Other.Id, w.OtherObs.Id, w.OtherDoc.Id, bin(w.OtherDoc)],
            "test-operator" => medical,
            "test-operator+btg" or ServerFixture.InstitutionClient => [],
            _ => [w.Own.Id, w.Other.Id, .. medical],
        };
        // An error answer may echo the ids the request itself named; what a success shows must not leak.
        foreach (var id in response.IsSuccessStatusCode ? forbidden : [])
            Assert.False(body.Contains(id, StringComparison.Ordinal), $"{cell} leaked {id}");
        switch (expected)
        {
            case "allowed":
                Assert.True(response.IsSuccessStatusCode, $"{cell} expected allowed, got {(int)response.StatusCode}");
                break;
            case "hidden":
                // A 200 is a search or history answer: what it shows was checked above. Deleting what one
                // cannot see answers 204, as deleting an id that does not exist does (R4 http.html#delete).
                Assert.True(response.StatusCode is HttpStatusCode.OK or HttpStatusCode.NotFound || method == "DELETE" && response.StatusCode == HttpStatusCode.NoContent,
                    $"{cell} expected 404 (204 for DELETE) or an answer without what is hidden, got {(int)response.StatusCode}");
                break;
            default:
                Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{cell} expected 403, got {(int)response.StatusCode}");
                break;
        }
    }
}
