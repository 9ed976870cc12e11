using System.Net;
using Hl7.Fhir.Model;
using PhrFhir.Server.Identity;
using Microsoft.Extensions.DependencyInjection;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// Identifier domains served as NamingSystems (docs/identity.md, "Identifier domains"): registered and
/// first-assigner domains both appear with the institutions allowed to assign; the operator's PUT corrects
/// who assigns, and the next Patient write follows it; nobody else changes a domain, and a bad NamingSystem
/// stores nothing.
/// </summary>
[Collection("server")]
public sealed class DomainNamingSystemTests(ServerFixture server)
{
    const string ActorSystem = "urn:oid:1.2.392.100495.20.3.2";
    const string Institution = "1310000001"; // the fixture's test-institution (server.Http)
    const string OtherInstitution = "1310000003"; // ServerFixture.OtherInstitutionClient

    static Patient With(string system, string value) => new() { Identifier = [new Identifier(system, value)], Name = [new HumanName { Family = "発番" }] };

    static NamingSystem Domain(string system, params string[] institutions) => new()
    {
        Name = "TestDomain",
        Status = PublicationStatus.Active,
        Kind = NamingSystem.NamingSystemType.Identifier,
        Date = "2026-12-06",
        UniqueId = [new NamingSystem.UniqueIdComponent { Type = NamingSystem.NamingSystemIdentifierType.Uri, Value = system }],
        Extension = [.. institutions.Select(i => new Extension(DomainNamingSystems.AssignerExtension,
            new ResourceReference { Type = "Organization", Identifier = new Identifier(ActorSystem, i) }))],
    };

    static string[] Assigners(NamingSystem ns) =>
        [.. ns.Extension.Where(e => e.Url == DomainNamingSystems.AssignerExtension).Select(e => ((ResourceReference)e.Value).Identifier.Value)];

    async Task<List<NamingSystem>> FindAsync(HttpClient client, string system)
    {
        var bundle = await Fhir.ExpectAsync<Bundle>(await client.GetAsync($"NamingSystem?value={Uri.EscapeDataString(system)}"), HttpStatusCode.OK);
        return [.. bundle.Entry.Select(e => (NamingSystem)e.Resource)];
    }

    [Fact]
    public async System.Threading.Tasks.Task A_registered_domain_is_a_NamingSystem_naming_the_institutions_that_assign_in_it()
    {
        var system = "urn:oid:1.2.392.999." + Random.Shared.Next(1, int.MaxValue);
        var created = await Fhir.ExpectAsync<NamingSystem>(
            await server.Operator.PutAsync($"NamingSystem/{DomainNamingSystems.IdOf(system)}", Fhir.Json(Domain(system, Institution))), HttpStatusCode.Created);

        var seen = Assert.Single(await FindAsync(server.Http, system));
        Assert.Equal(created.Id, seen.Id);
        Assert.Equal(NamingSystem.NamingSystemType.Identifier, seen.Kind);
        Assert.Equal(PublicationStatus.Active, seen.Status);
        Assert.Equal([Institution], Assigners(seen));
        Assert.Contains(seen.UniqueId, u => u.Type == NamingSystem.NamingSystemIdentifierType.Uri && u.Value == system && u.Preferred == true);
        Assert.Contains(seen.UniqueId, u => u.Type == NamingSystem.NamingSystemIdentifierType.Oid && u.Value == system[8..]);
        await Fhir.ExpectAsync<NamingSystem>(await server.Http.GetAsync($"NamingSystem/{created.Id}"), HttpStatusCode.OK);
        var byKind = await Fhir.ExpectAsync<Bundle>(await server.Http.GetAsync($"NamingSystem?kind=identifier&status=active&_id={created.Id}"), HttpStatusCode.OK);
        Assert.Single(byKind.Entry);

        // An institution sees the domains it assigns in, the person none: a domain of another is unknown to them.
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        Assert.Empty(await FindAsync(other, system));
        await Fhir.ExpectAsync<OperationOutcome>(await other.GetAsync($"NamingSystem/{created.Id}"), HttpStatusCode.NotFound);
        await PatientLinkTests.ThePersonAsync(server); // the person's token needs their Patient registered (this test alone too)
        using var person = await server.ClientAsync("test-person-linked");
        Assert.Empty(await FindAsync(person, system));
        Assert.Empty(await FindAsync(server.Anonymous, system));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_served_domain_validates_against_our_package_which_defines_its_assigner_extension()
    {
        var system = "urn:oid:1.2.392.999." + Random.Shared.Next(1, int.MaxValue);
        var created = await Fhir.ExpectAsync<NamingSystem>(
            await server.Operator.PutAsync($"NamingSystem/{DomainNamingSystems.IdOf(system)}", Fhir.Json(Domain(system, Institution))), HttpStatusCode.Created);
        // With our package's definitions (family phrfhir): R4 core alone does not know our extensions.
        var validator = server.Services.GetRequiredService<PhrFhir.Validation.DocumentValidator>();
        var outcome = await validator.ValidateAsync(created, null, "phrfhir");
        Assert.DoesNotContain(outcome.Issue, i => i.Severity is OperationOutcome.IssueSeverity.Error or OperationOutcome.IssueSeverity.Fatal);
        Assert.DoesNotContain(outcome.Issue, i => (i.Diagnostics ?? i.Details?.Text ?? "").Contains("identifier-domain-assigner", StringComparison.Ordinal));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_first_assigners_domain_appears_as_a_NamingSystem_the_operator_may_correct()
    {
        var system = "urn:test:domain:" + Fhir.Unique();
        await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With(system, "1"))), HttpStatusCode.Created);

        var seen = Assert.Single(await FindAsync(server.Operator, system));
        Assert.Equal([Institution], Assigners(seen));
        Assert.Contains("first assigner", seen.Description);
        Assert.Equal(DomainNamingSystems.IdOf(system), seen.Id);
    }

    [Fact]
    public async System.Threading.Tasks.Task The_operators_correction_changes_who_may_assign_in_the_domain()
    {
        var system = "urn:test:domain:" + Fhir.Unique();
        await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With(system, "1"))), HttpStatusCode.Created);
        var corrected = Domain(system, OtherInstitution);
        var answer = await Fhir.ExpectAsync<NamingSystem>(
            await server.Operator.PutAsync($"NamingSystem/{DomainNamingSystems.IdOf(system)}", Fhir.Json(corrected)), HttpStatusCode.OK);
        Assert.Equal([OtherInstitution], Assigners(answer));
        Assert.Contains("registered", answer.Description);

        // The old first assigner is refused from now on; the institution the operator named assigns.
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await server.Http.PostAsync("Patient", Fhir.Json(With(system, "2"))), HttpStatusCode.Forbidden);
        Assert.Contains(system, refused.Issue[0].Diagnostics);
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        await Fhir.ExpectAsync<Patient>(await other.PostAsync("Patient", Fhir.Json(With(system, "3"))), HttpStatusCode.Created);
        Assert.Empty(await FindAsync(server.Http, system));
        Assert.Single(await FindAsync(other, system));
    }

    [Fact]
    public async System.Threading.Tasks.Task Only_the_operator_registers_or_corrects_a_domain()
    {
        var system = "urn:test:domain:" + Fhir.Unique();
        await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(With(system, "1"))), HttpStatusCode.Created);
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        foreach (var client in new[] { server.Http, other })
            await Fhir.ExpectAsync<OperationOutcome>(
                await client.PutAsync($"NamingSystem/{DomainNamingSystems.IdOf(system)}", Fhir.Json(Domain(system, OtherInstitution))), HttpStatusCode.Forbidden);
        await PatientLinkTests.ThePersonAsync(server); // the person's token needs their Patient registered (this test alone too)
        using var person = await server.ClientAsync("test-person-linked");
        await Fhir.ExpectAsync<OperationOutcome>(await person.PostAsync("NamingSystem", Fhir.Json(Domain(system, OtherInstitution))), HttpStatusCode.Forbidden);
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.DeleteAsync($"NamingSystem/{DomainNamingSystems.IdOf(system)}"), HttpStatusCode.MethodNotAllowed);

        Assert.Equal([Institution], Assigners(Assert.Single(await FindAsync(server.Operator, system))));
    }

    public static TheoryData<string, HttpStatusCode> BadDomains => new()
    {
        { "kind codesystem", HttpStatusCode.UnprocessableEntity },
        { "status retired", HttpStatusCode.UnprocessableEntity },
        { "no assigner", HttpStatusCode.UnprocessableEntity },
        { "assigner without identifier", HttpStatusCode.UnprocessableEntity },
        { "no uri uniqueId", HttpStatusCode.UnprocessableEntity },
        { "relative uri", HttpStatusCode.UnprocessableEntity },
        { "oid of another system", HttpStatusCode.UnprocessableEntity },
        { "id of another system", HttpStatusCode.BadRequest },
        { "not a NamingSystem", HttpStatusCode.BadRequest },
    };

    [Theory]
    [MemberData(nameof(BadDomains))]
    public async System.Threading.Tasks.Task A_bad_NamingSystem_is_refused_with_an_OperationOutcome_and_nothing_is_stored(string mutation, HttpStatusCode status)
    {
        var system = "urn:oid:1.2.392.998." + Random.Shared.Next(1, int.MaxValue);
        var ns = Domain(system, Institution);
        var id = DomainNamingSystems.IdOf(system);
        Resource body = ns;
        switch (mutation)
        {
            case "kind codesystem": ns.Kind = NamingSystem.NamingSystemType.Codesystem; break;
            case "status retired": ns.Status = PublicationStatus.Retired; break;
            case "no assigner": ns.Extension.Clear(); break;
            case "assigner without identifier": ns.Extension[0].Value = new ResourceReference("Organization/x"); break;
            case "no uri uniqueId": ns.UniqueId[0].Type = NamingSystem.NamingSystemIdentifierType.Other; break;
            case "relative uri": ns.UniqueId[0].Value = "domain/7"; id = DomainNamingSystems.IdOf("domain/7"); break;
            case "oid of another system": ns.UniqueId.Add(new() { Type = NamingSystem.NamingSystemIdentifierType.Oid, Value = "1.2.3" }); break;
            case "id of another system": id = DomainNamingSystems.IdOf(system + "0"); break;
            case "not a NamingSystem": body = With(system, "1"); break;
        }
        var refused = await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.PutAsync($"NamingSystem/{id}", Fhir.Json(body)), status);
        Assert.Matches("[\u3040-\u30ff]", refused.Issue[0].Diagnostics); // English and Japanese
        Assert.Empty(await FindAsync(server.Operator, system));
    }

    [Fact]
    public async System.Threading.Tasks.Task The_CapabilityStatement_declares_the_NamingSystems_and_their_R4_search_parameters()
    {
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Anonymous.GetAsync("metadata"), HttpStatusCode.OK);
        var ns = cs.Rest[0].Resource.Single(r => r.Type == "NamingSystem");
        Assert.Superset(new HashSet<string> { "value", "kind", "status" }, ns.SearchParam.Select(p => p.Name).ToHashSet());
        Assert.Contains(ns.Interaction, i => i.Code == CapabilityStatement.TypeRestfulInteraction.Update);
    }
}
