using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// Role × interaction, one cell per row: what each kind of client may do today. The person's rows are
/// about their own records ("own") and someone else's ("other"); physicians and employers are refused
/// everything until the consent rules exist (issue #7) — when those land, their cells change here.
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
        string[] reads =
        [
            "GET Patient/{own}", "GET Patient/{other}", "GET Observation/{otherObs}", "GET Observation/{ownObs}/_history",
            "GET Observation/{otherObs}/_history/1", "GET Observation?subject=Patient/{other}", "GET Observation?patient.identifier=urn:oid:1.2.392.100495.20.3.51.11312345678|00012345",
            "GET Patient?_id={own}&_revinclude=Observation:patient", "GET Observation?_id={ownObs}&_include=Observation:patient", "GET Observation/_history",
            "GET DocumentReference/{otherDoc}", "GET {otherBin}", "GET {ownBin}", "GET Observation?_count=1",
        ];
        foreach (var r in reads)
        {
            data.Add("test-operator", r.Split(' ')[0], r.Split(' ')[1], "allowed");
            data.Add("test-physician", r.Split(' ')[0], r.Split(' ')[1], "denied");
            data.Add("test-employer", r.Split(' ')[0], r.Split(' ')[1], "denied");
            var person = r.Contains("{other") ? "hidden" : "allowed";
            data.Add("test-person", r.Split(' ')[0], r.Split(' ')[1], person);
        }
        // The reader institution's scopes are Patient and Observation search/read only.
        data.Add("test-institution-reader", "GET", "Observation/{otherObs}", "allowed");
        data.Add("test-institution-reader", "GET", "DocumentReference/{otherDoc}", "denied");
        data.Add("test-institution-reader", "GET", "{otherBin}", "denied");
        foreach (var client in new[] { "test-person", "test-physician", "test-employer", "test-institution-reader" })
        {
            data.Add(client, "POST", "Observation", "denied");
            data.Add(client, "DELETE", "Observation/{ownObs}", "denied");
            data.Add(client, "POST", "", "denied"); // a transaction
        }
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
        using var http = await server.ClientAsync(client);
        var request = new HttpRequestMessage(new HttpMethod(method), url);
        if (method == "POST")
            request.Content = path == ""
                ? Fhir.Json(new Bundle { Type = Bundle.BundleType.Transaction, Entry = [new Bundle.EntryComponent { Resource = new Observation { Status = ObservationStatus.Final, Code = new CodeableConcept { Text = "x" } }, Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Observation" } }] })
                : Fhir.Json(new Observation { Status = ObservationStatus.Final, Code = new CodeableConcept { Text = "x" }, Subject = new ResourceReference($"Patient/{w.Own.Id}") });
        var response = await http.SendAsync(request);
        var cell = $"[{client} {method} {path}]";
        var body = await response.Content.ReadAsStringAsync();
        // What the answer discloses: a searchset's entries (its links only echo the request), else the whole body.
        if (body.Contains("\"searchset\"", StringComparison.Ordinal))
            body = string.Join("\n", (await Fhir.ReadAsync<Bundle>(response)).Entry.Select(e => e.FullUrl + " " + e.Resource?.TypeName + "/" + e.Resource?.Id));
        switch (expected)
        {
            case "allowed":
                Assert.True(response.IsSuccessStatusCode, $"{cell} expected allowed, got {(int)response.StatusCode}");
                // Nothing of the other person may appear in an allowed answer to the person.
                if (client == "test-person")
                    foreach (var foreign in new[] { w.Other.Id, w.OtherObs.Id, w.OtherDoc.Id })
                        Assert.False(body.Contains(foreign, StringComparison.Ordinal), $"{cell} leaked {foreign}");
                break;
            case "hidden":
                if (response.StatusCode == HttpStatusCode.OK)
                    foreach (var foreign in new[] { w.Other.Id, w.OtherObs.Id, w.OtherDoc.Id })
                        Assert.False(body.Contains(foreign, StringComparison.Ordinal), $"{cell} leaked {foreign}");
                else Assert.True(response.StatusCode == HttpStatusCode.NotFound, $"{cell} expected 404 or an answer without the other person, got {(int)response.StatusCode}");
                break;
            default:
                Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{cell} expected 403, got {(int)response.StatusCode}");
                break;
        }
    }
}
