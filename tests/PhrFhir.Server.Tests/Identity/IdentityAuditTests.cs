using System.Net;
using System.Text;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Microsoft.Extensions.DependencyInjection;
using PhrFhir.Validation;
using static PhrFhir.Server.Tests.Audit.PersonAccessLogTests;
using static PhrFhir.Server.Tests.Identity.PatientLinkTests;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// The AuditEvents of the identity transactions have the IHE shapes (docs/audit.md): PIXm 3.1 ITI-83 at the
/// Manager for `$ihe-pix`, PDQm 3.2 ITI-78 and ITI-119 at the Supplier for Patient searches and `$match`.
/// The server's validator has no PIXm/PDQm family (each family costs memory), so each event is validated
/// against the BALP profile its IHE profile derives from (IHE.BasicAudit.PatientQuery / Query, family
/// ihe-balp), and what PIXm/PDQm add on top (subtype, patient identifier, server agent = source) is asserted here.
/// </summary>
[Collection("server")]
public sealed class IdentityAuditTests(ServerFixture server)
{
    const string Balp = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/";
    const string IheEvents = "urn:ihe:event-type-code";
    const string NoRef = "../shared/ref (IHE BALP profiles) is not present: AuditEvent conformance cannot be judged";

    static bool ReferencePresent => SharedRef.Find() is { } root && Directory.Exists(Path.Combine(root, "ihe", "BALP-1.1.4", "sushi-compiled"));

    static string Since() => "ge" + Uri.EscapeDataString(DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));

    static string QueryOf(AuditEvent a) => a.Entity.SingleOrDefault(e => e.Role?.Code == "24") is { Query: { } q } ? Encoding.UTF8.GetString(q) : "";

    /// <summary>The operator's view of the events of one IHE transaction since <paramref name="since"/> whose query mentions <paramref name="marker"/>.</summary>
    async Task<List<AuditEvent>> EventsAsync(string iti, string since, string marker)
    {
        var found = await PollAsync(server.Operator, $"subtype={IheEvents}|{iti}&date={since}&_count=100", all => all.Any(a => QueryOf(a).Contains(marker, StringComparison.Ordinal)));
        return [.. found.Where(a => QueryOf(a).Contains(marker, StringComparison.Ordinal))];
    }

    /// <summary>
    /// What every PIXm/PDQm query audit at the server has: a RESTful "search" with the IHE subtype (code and
    /// display as the profile fixes them), the client as 110153 and the server as 110152 and as the audit
    /// source (val-audit-source), one query entity; and it conforms to the BALP profile it derives from.
    /// </summary>
    async System.Threading.Tasks.Task AssertQueryShapeAsync(AuditEvent audit, string iti, string display, string profile, string balpParent)
    {
        var json = await Fhir.Json(audit).ReadAsStringAsync();
        Assert.True(audit.Meta.Profile.SequenceEqual([profile]), $"declares [{string.Join(", ", audit.Meta.Profile)}], expected {profile}\n{json}");
        Assert.Equal("rest", audit.Type.Code);
        Assert.Equal(AuditEvent.AuditEventAction.E, audit.Action);
        Assert.Equal(AuditEvent.AuditEventOutcome.N0, audit.Outcome);
        Assert.Contains(audit.Subtype, c => c.System == "http://hl7.org/fhir/restful-interaction" && c.Code is "search" or "search-type");
        Assert.Contains(audit.Subtype, c => c.System == IheEvents && c.Code == iti && c.Display == display);
        var client = Assert.Single(audit.Agent, a => a.Type.Coding.Any(c => c.Code == "110153"));
        Assert.Equal("urn:phrfhir:client", client.Who.Identifier.System);
        Assert.Equal(AuditEvent.AuditEventAgentNetworkType.N2, client.Network.Type);
        var agentOfServer = Assert.Single(audit.Agent, a => a.Type.Coding.Any(c => c.Code == "110152"));
        Assert.True(agentOfServer.Who.Matches(audit.Source.Observer), "the server agent is the audit source (PIXm/PDQm val-audit-source)");
        Assert.Equal(AuditEvent.AuditEventAgentNetworkType.N5, agentOfServer.Network.Type);
        var query = Assert.Single(audit.Entity, e => e.Role?.Code == "24");
        Assert.Equal("2", query.Type.Code);
        Assert.Null(query.What);
        Assert.DoesNotContain("Bearer", json, StringComparison.OrdinalIgnoreCase); // nothing secret: no token in the audit

        var validator = server.Services.GetRequiredService<DocumentValidator>();
        var asBalp = (AuditEvent)audit.DeepCopy();
        asBalp.Meta.Profile = [balpParent];
        var outcome = await validator.ValidateAsync(asBalp, balpParent, "ihe-balp");
        Assert.DoesNotContain(outcome.Issue, i => i.Code == OperationOutcome.IssueType.NotSupported && i.Diagnostics?.Contains("Profile", StringComparison.Ordinal) == true);
        var errors = outcome.Issue.Where(i => i.Severity <= OperationOutcome.IssueSeverity.Error).ToList();
        Assert.True(errors.Count == 0, $"{iti} as {balpParent}: {errors.Count} errors\n" +
            string.Join("\n", errors.Select(e => $"  {string.Join(",", e.Expression)} :: {e.Diagnostics}")) + "\n" + json);
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task A_PIXm_query_is_audited_as_ITI_83_at_the_Manager_naming_the_patient_by_the_queried_identifier()
    {
        Skip.IfNot(ReferencePresent, NoRef);
        var run = Fhir.Unique();
        var person = await ThePersonAsync(server);
        var (a, _) = await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-a:{run}", "A1");
        await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(a)))), HttpStatusCode.OK);
        var since = Since();

        var source = $"urn:test:kenshin-a:{run}|A1";
        await Fhir.ExpectAsync<Parameters>(await server.Operator.GetAsync("Patient/$ihe-pix?sourceIdentifier=" + Uri.EscapeDataString(source)), HttpStatusCode.OK);
        // One event per patient compartment the answer reached (BALP: one patient per event).
        var events = await EventsAsync("ITI-83", since, run);
        Assert.Contains(events, e => PatientOf(e) == $"Patient/{person.Id}");
        foreach (var audit in events)
        {
            await AssertQueryShapeAsync(audit, "ITI-83", "Mobile Patient Identifier Cross-reference Query",
                "https://profiles.ihe.net/ITI/PIXm/StructureDefinition/IHE.PIXm.Query.Audit.Manager", Balp + "IHE.BasicAudit.PatientQuery");
            Assert.Equal("GET /Patient/$ihe-pix?sourceIdentifier=" + Uri.EscapeDataString(source), QueryOf(audit));
            // PIXm: the patient entity names the patient by identifier (what.identifier 1..1); the reference files it in that patient's log.
            var patient = Assert.Single(audit.Entity, e => e.Type?.Code == "1" && e.Role?.Code == "1");
            Assert.StartsWith("Patient/", patient.What.Reference, StringComparison.Ordinal);
            Assert.Equal(($"urn:test:kenshin-a:{run}", "A1"), (patient.What.Identifier.System, patient.What.Identifier.Value));
        }

        // A POST of Parameters is the same query: its query entity is the Parameters sent.
        var posted = await server.Operator.PostAsync("Patient/$ihe-pix", Link(("sourceIdentifier", new FhirString(source)), ("targetSystem", new FhirString(PersonSystem))));
        await Fhir.ExpectAsync<Parameters>(posted, HttpStatusCode.OK);
        var byPost = (await EventsAsync("ITI-83", since, "\"resourceType\":\"Parameters\"")).Where(e => QueryOf(e).Contains(run, StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(byPost);
        Assert.All(byPost, e => Assert.Contains(PersonSystem, QueryOf(e), StringComparison.Ordinal));
        Assert.All(byPost, e => Assert.Equal("https://profiles.ihe.net/ITI/PIXm/StructureDefinition/IHE.PIXm.Query.Audit.Manager", Assert.Single(e.Meta.Profile)));

        // An unknown identifier (404) keeps the ITI-83 shape with its failure outcome, and declares no profile (PIXm's outcome is success).
        Assert.Equal(HttpStatusCode.NotFound, (await server.Operator.GetAsync($"Patient/$ihe-pix?sourceIdentifier=urn:test:kenshin-a:{run}|nobody")).StatusCode);
        var refused = Assert.Single(await EventsAsync("ITI-83", since, "nobody"));
        Assert.Equal(AuditEvent.AuditEventOutcome.N4, refused.Outcome);
        Assert.Empty(refused.Meta.Profile);
        Assert.Contains(refused.Subtype, c => c.System == IheEvents && c.Code == "ITI-83");
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task A_Patient_search_is_audited_as_PDQm_ITI_78_at_the_Supplier()
    {
        Skip.IfNot(ReferencePresent, NoRef);
        var run = Fhir.Unique();
        var system = "urn:test:pdqm-audit:" + run;
        var patient = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient
        {
            Identifier = [new Identifier(system, "1")],
            Name = [new HumanName { Family = "監査", Given = ["花子"] }],
        })), HttpStatusCode.Created);
        var since = Since();

        var found = await Fhir.ExpectAsync<Bundle>(await server.Http.GetAsync($"Patient?identifier={Uri.EscapeDataString(system)}|1"), HttpStatusCode.OK);
        Assert.Single(found.Entry);
        var events = await EventsAsync("ITI-78", since, run);
        Assert.NotEmpty(events);
        foreach (var audit in events)
            await AssertQueryShapeAsync(audit, "ITI-78", "Mobile Patient Demographics Query",
                "https://profiles.ihe.net/ITI/PDQm/StructureDefinition/IHE.PDQm.Query.Audit.Supplier", Balp + "IHE.BasicAudit.Query");
        // The patient found is recorded (PDQm: patient 0..1), so the search is in that patient's access log.
        Assert.Contains(events, e => PatientOf(e) == $"Patient/{patient.Id}");
        Assert.All(events, e => Assert.StartsWith("GET /Patient?identifier=", QueryOf(e), StringComparison.Ordinal));
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task A_match_is_audited_as_PDQm_ITI_119_at_the_Supplier_with_the_Parameters_as_its_query()
    {
        Skip.IfNot(ReferencePresent, NoRef);
        var (family, given) = (PatientMatchTests.Name.Unique(), PatientMatchTests.Name.Unique());
        var truth = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(PatientMatchTests.Person(family, given, "1966-02-03"))), HttpStatusCode.Created);
        var since = Since();

        var body = Fhir.Json(new Parameters { Parameter = [new() { Name = "resource", Resource = PatientMatchTests.Person(family, given, "1966-02-03") }] });
        var matched = await Fhir.ExpectAsync<Bundle>(await server.Http.PostAsync("Patient/$match", body), HttpStatusCode.OK);
        Assert.Contains(matched.Entry, e => e.Resource.Id == truth.Id);
        var events = await EventsAsync("ITI-119", since, family.Kanji);
        var audit = Assert.Single(events, e => PatientOf(e) == $"Patient/{truth.Id}");
        await AssertQueryShapeAsync(audit, "ITI-119", "Patient Demographics Match",
            "https://profiles.ihe.net/ITI/PDQm/StructureDefinition/IHE.PDQm.Match.Audit.Supplier", Balp + "IHE.BasicAudit.Query");
        // PDQm ITI-119: the query entity is the Parameters resource the consumer sent.
        var sent = (Parameters)new FhirJsonDeserializer(new DeserializerSettings()).DeserializeResource(QueryOf(audit));
        Assert.Equal(family.Kanji, ((Patient)sent.Parameter.Single(p => p.Name == "resource").Resource).Name[0].Family);
    }
}
