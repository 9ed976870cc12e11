using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// A single-resource write and a transaction Bundle's entry meet the identity checks alike (IdentifierDomains): the same
/// OperationOutcome, nothing of a refused write stored, one value to one person under concurrency.
/// </summary>
[Collection("server")]
public sealed class IdentityChecksAlikeTests(ServerFixture server)
{
    static Patient With(params (string System, string Value)[] ids) =>
        new() { Identifier = [.. ids.Select(i => new Identifier(i.System, i.Value))], Name = [new HumanName { Family = "照合" }] };

    static Bundle Transaction(Patient patient) => new()
    {
        Type = Bundle.BundleType.Transaction,
        Entry = [new Bundle.EntryComponent
        {
            FullUrl = "urn:uuid:" + Guid.NewGuid(), Resource = patient,
            Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Patient" },
        }],
    };

    static void SameRefusal(OperationOutcome single, OperationOutcome inBundle, string expression)
    {
        var (a, b) = (single.Issue.Single(), inBundle.Issue.Single());
        Assert.Equal(a.Code, b.Code);
        Assert.Equal($"Bundle.entry[0]: {a.Diagnostics}", b.Diagnostics);
        Assert.Equal(expression, a.Expression.Single());
        Assert.Equal("Bundle.entry[0].resource." + expression["Patient.".Length..], b.Expression.Single());
    }

    [Fact]
    public async System.Threading.Tasks.Task A_value_held_by_another_patient_is_refused_alike_by_a_create_and_by_a_transaction_entry()
    {
        var system = "urn:test:domain:" + Fhir.Unique();
        await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With((system, "1")))), HttpStatusCode.Created);

        var colliding = With((system, "2"), (system, "1"));
        var single = await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("Patient", Fhir.Json(colliding)), HttpStatusCode.Conflict);
        var inBundle = await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("", Fhir.Json(Transaction(colliding))), HttpStatusCode.Conflict);
        Assert.Equal(OperationOutcome.IssueType.Duplicate, single.Issue[0].Code);
        Assert.Contains(system, single.Issue[0].Diagnostics);
        SameRefusal(single, inBundle, "Patient.identifier[1]");

        // Nothing of either was stored: value 2 is held by nobody, so a create with it succeeds.
        var all = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"Patient?identifier={system}|&_total=accurate"), HttpStatusCode.OK);
        Assert.Equal(1, all.Total);
        await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With((system, "2")))), HttpStatusCode.Created);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_system_of_another_institution_is_refused_alike_by_a_create_and_by_a_transaction_entry()
    {
        var system = "urn:test:domain:" + Fhir.Unique();
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        await Fhir.ExpectAsync<Patient>(await other.PostAsync("Patient", Fhir.Json(With((system, "1")))), HttpStatusCode.Created);

        var own = "urn:test:domain:" + Fhir.Unique();
        var theirs = With((own, "1"), (system, "2"));
        var single = await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("Patient", Fhir.Json(theirs)), HttpStatusCode.Forbidden);
        var inBundle = await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("", Fhir.Json(Transaction(theirs))), HttpStatusCode.Forbidden);
        Assert.Equal(OperationOutcome.IssueType.Forbidden, single.Issue[0].Code);
        SameRefusal(single, inBundle, "Patient.identifier[1]");

        // The refused creates claimed nothing either: `own`, in them before the refused identifier, is still nobody's,
        // so the other institution becomes its first assigner.
        await Fhir.ExpectAsync<Patient>(await other.PostAsync("Patient", Fhir.Json(With((own, "9")))), HttpStatusCode.Created);
        await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("Patient", Fhir.Json(With((own, "10")))), HttpStatusCode.Forbidden);
    }

    [Fact]
    public async System.Threading.Tasks.Task JP_Cores_system_of_another_institutions_number_is_refused_by_a_create_and_claimed_by_nobody()
    {
        const string others = "urn:oid:1.2.392.100495.20.3.51.11310000003"; // the other institution's number (fixture)
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("Patient", Fhir.Json(With((others, Fhir.Unique("p"))))), HttpStatusCode.Forbidden);
        Assert.Equal("Patient.identifier[0]", refused.Issue[0].Expression.Single());
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        await Fhir.ExpectAsync<Patient>(await other.PostAsync("Patient", Fhir.Json(With((others, Fhir.Unique("p"))))), HttpStatusCode.Created);
    }

    [Fact]
    public async System.Threading.Tasks.Task Eight_concurrent_creates_of_one_new_value_store_it_once()
    {
        var system = "urn:test:domain:" + Fhir.Unique();
        var answers = await System.Threading.Tasks.Task.WhenAll(Enumerable.Range(0, 8)
            .Select(_ => server.Http.PostAsync("Patient", Fhir.Json(With((system, "same"))))));
        Assert.Equal(1, answers.Count(a => a.StatusCode == HttpStatusCode.Created));
        Assert.All(answers.Where(a => a.StatusCode != HttpStatusCode.Created), a => Assert.Equal(HttpStatusCode.Conflict, a.StatusCode));
        var all = await Fhir.ExpectAsync<Bundle>(await server.Operator.GetAsync($"Patient?identifier={system}|same&_total=accurate"), HttpStatusCode.OK);
        Assert.Equal(1, all.Total);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_patch_giving_a_patient_another_patients_value_is_refused_and_leaves_it_unchanged()
    {
        var system = "urn:test:domain:" + Fhir.Unique();
        await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With((system, "1")))), HttpStatusCode.Created);
        var second = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With((system, "2")))), HttpStatusCode.Created);
        var patch = new Parameters();
        patch.Parameter.Add(new Parameters.ParameterComponent
        {
            Name = "operation",
            Part =
            [
                new() { Name = "type", Value = new Code("add") },
                new() { Name = "path", Value = new FhirString("Patient") },
                new() { Name = "name", Value = new FhirString("identifier") },
                new() { Name = "value", Value = new Identifier(system, "1") },
            ],
        });
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PatchAsync($"Patient/{second.Id}", Fhir.Json(patch)), HttpStatusCode.Conflict);
        Assert.Equal("Patient.identifier[1]", refused.Issue[0].Expression.Single());
        var stored = await Fhir.ExpectAsync<Patient>(await server.Http.GetAsync($"Patient/{second.Id}"), HttpStatusCode.OK);
        Assert.Equal("1", stored.Meta.VersionId);
    }
}
