using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests;

/// <summary>
/// A search that names a Patient by reference reads its token criteria for the persons of that Patient's rows only
/// (FhirStore.Intersection, Schema/021): what matches does not depend on whose compartment the matches are in —
/// documents about another patient that name this one as author, resources in no one's compartment — and totals
/// and pages stay whole.
/// </summary>
[Collection("server")]
public sealed class SearchByPatientTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    async Task<Patient> PatientAsync() =>
        await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("索引") }] })), HttpStatusCode.Created);

    async Task<string> DocumentAsync(Patient subject, DocumentReferenceStatus status, Patient? author = null) =>
        (await Fhir.ExpectAsync<DocumentReference>(await _http.PostAsync("DocumentReference", Fhir.Json(new DocumentReference
        {
            Status = status,
            Subject = new ResourceReference($"Patient/{subject.Id}"),
            Author = author is null ? [] : [new ResourceReference($"Patient/{author.Id}")],
            MasterIdentifier = new Identifier("urn:ietf:rfc:3986", "urn:oid:2.999." + Random.Shared.NextInt64(1, long.MaxValue)),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Url = "http://example.org/doc" } }],
        })), HttpStatusCode.Created)).Id;

    async Task<(List<string> Ids, int? Total)> AllPagesAsync(string search)
    {
        var ids = new List<string>();
        int? total = null;
        for (var url = search; url is not null;)
        {
            var page = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync(url), HttpStatusCode.OK);
            total = page.Total;
            ids.AddRange(page.Entry.Select(e => e.Resource.Id));
            url = page.Link.FirstOrDefault(l => l.Relation == "next")?.Url;
        }
        return (ids, total);
    }

    [Fact]
    public async System.Threading.Tasks.Task Criteria_beside_a_patient_reference_match_whatever_compartment_the_resources_are_in()
    {
        var p = await PatientAsync();
        var q = await PatientAsync();
        var current = new List<string>();
        for (var i = 0; i < 7; i++) current.Add(await DocumentAsync(p, DocumentReferenceStatus.Current));
        var superseded = await DocumentAsync(p, DocumentReferenceStatus.Superseded);
        var aboutQ = await DocumentAsync(q, DocumentReferenceStatus.Current, author: p); // in q's compartment, authored by p
        await DocumentAsync(q, DocumentReferenceStatus.Current);

        // ITI-67's shape, paged: every current document of p once, the total of all pages.
        var (ids, total) = await AllPagesAsync($"DocumentReference?patient=Patient/{p.Id}&status=current&_count=3");
        Assert.Equal(current.Order(), ids.Order());
        Assert.Equal(7, total);
        // The criteria in the other order, and a bare id of the Patient-only parameter: the same.
        Assert.Equal(current.Order(), (await AllPagesAsync($"DocumentReference?status=current&patient={p.Id}&_count=100")).Ids.Order());
        Assert.Equal([superseded], (await AllPagesAsync($"DocumentReference?patient=Patient/{p.Id}&status=superseded")).Ids);
        // Named as author, p's matches are in q's compartment.
        Assert.Equal([aboutQ], (await AllPagesAsync($"DocumentReference?author=Patient/{p.Id}&status=current")).Ids);
        // Two patients at once.
        Assert.Equal(9, (await AllPagesAsync($"DocumentReference?patient=Patient/{p.Id},Patient/{q.Id}&status=current&_count=4")).Total);

        // A Group is in no one's compartment (its member is no patient/subject): still found by a member and its type.
        var group = await Fhir.ExpectAsync<Group>(await _http.PostAsync("Group", Fhir.Json(new Group
        {
            Type = Group.GroupType.Person,
            Actual = true,
            Member = [new Group.MemberComponent { Entity = new ResourceReference($"Patient/{p.Id}") }],
        })), HttpStatusCode.Created);
        Assert.Equal([group.Id], (await AllPagesAsync($"Group?member=Patient/{p.Id}&type=person")).Ids);
    }
}
