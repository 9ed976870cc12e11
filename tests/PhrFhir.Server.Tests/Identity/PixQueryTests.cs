using System.Net;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using static PhrFhir.Server.Tests.Identity.PatientLinkTests;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>IHE PIXm ITI-83 `Patient/$ihe-pix` (docs/identity.md): cross-references, errors, who sees which domains, the IG's examples.</summary>
[Collection("server")]
public sealed class PixQueryTests(ServerFixture server)
{
    /// <summary>The person's Patient with institution A's, hospital B's and the employer's records linked to it.</summary>
    async Task<(Patient Person, Patient A, Patient B, string Run)> LinkedAsync()
    {
        var run = Fhir.Unique();
        var person = await ThePersonAsync(server);
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var (a, _) = await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-a:{run}", "A1");
        var (b, _) = await InstitutionRecordAsync(other, $"urn:test:hospital-b:{run}", "B1");
        foreach (var p in new[] { a, b })
            await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(person)), ("patient", Ref(p)))), HttpStatusCode.OK);
        return (person, a, b, run);
    }

    static string Pix(string source, params string[] targets) =>
        "Patient/$ihe-pix?sourceIdentifier=" + Uri.EscapeDataString(source) + string.Concat(targets.Select(t => "&targetSystem=" + Uri.EscapeDataString(t)));

    static List<string> Described(Parameters p) => [.. p.Parameter.Select(x => x.Name + " " + x.Value switch
    {
        ResourceReference r => r.Reference,
        Identifier i => i.System + "|" + i.Value,
        _ => "?",
    })];

    [Fact]
    public async System.Threading.Tasks.Task The_operator_cross_references_every_linked_identifier_in_both_directions()
    {
        var (person, a, b, run) = await LinkedAsync();
        var fromA = await Fhir.ExpectAsync<Parameters>(await server.Operator.GetAsync(Pix($"urn:test:kenshin-a:{run}|A1")), HttpStatusCode.OK);
        Assert.Contains("https://profiles.ihe.net/ITI/PIXm/StructureDefinition/IHE.PIXm.Query.Parameters.Out", fromA.Meta.Profile);
        var described = Described(fromA);
        Assert.Contains($"targetId Patient/{b.Id}", described);
        Assert.Contains($"targetIdentifier urn:test:hospital-b:{run}|B1", described);
        Assert.Contains($"targetId Patient/{person.Id}", described);
        Assert.Contains($"targetIdentifier {PersonSystem}|{PersonValue}", described);
        Assert.DoesNotContain($"targetId Patient/{a.Id}", described); // the source is not its own cross-reference

        // The other way, restricted to one domain: only A's number.
        var fromB = await Fhir.ExpectAsync<Parameters>(await server.Operator.GetAsync(Pix($"urn:test:hospital-b:{run}|B1", $"urn:test:kenshin-a:{run}")), HttpStatusCode.OK);
        Assert.Equal([$"targetId Patient/{a.Id}", $"targetIdentifier urn:test:kenshin-a:{run}|A1"], Described(fromB));
    }

    [Fact]
    public async System.Threading.Tasks.Task The_operations_are_declared_and_a_POST_of_Parameters_is_the_same_query()
    {
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Anonymous.GetAsync("metadata"), HttpStatusCode.OK);
        var patient = cs.Rest[0].Resource.Single(r => r.Type == "Patient");
        Assert.Contains(patient.Operation, o => o.Name == "ihe-pix" && o.Definition == "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix");
        Assert.Contains(patient.Operation, o => o.Name == "link");
        Assert.Contains(patient.Operation, o => o.Name == "unlink");

        var (_, _, _, run) = await LinkedAsync();
        var byGet = await server.Operator.GetAsync(Pix($"urn:test:kenshin-a:{run}|A1", $"urn:test:hospital-b:{run}"));
        var byPost = await server.Operator.PostAsync("Patient/$ihe-pix", Fhir.Json(new Parameters
        {
            Parameter =
            [
                new() { Name = "sourceIdentifier", Value = new FhirString($"urn:test:kenshin-a:{run}|A1") },
                new() { Name = "targetSystem", Value = new FhirString($"urn:test:hospital-b:{run}") },
            ],
        }));
        Assert.Equal(Described(await Fhir.ExpectAsync<Parameters>(byGet, HttpStatusCode.OK)), Described(await Fhir.ExpectAsync<Parameters>(byPost, HttpStatusCode.OK)));
    }

    [Fact]
    public async System.Threading.Tasks.Task Errors_are_answered_as_ITI_83_says()
    {
        var (_, _, _, run) = await LinkedAsync();
        // Unknown source identifier in a known domain: 404 (PIXm's OperationOutcome example text).
        var notFound = await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync(Pix($"urn:test:kenshin-a:{run}|no-such")), HttpStatusCode.NotFound);
        Assert.StartsWith("sourceIdentifier Patient Identifier not found", notFound.Issue[0].Diagnostics);
        Assert.Equal(OperationOutcome.IssueType.NotFound, notFound.Issue[0].Code);
        // Unknown target domain: 403.
        var target = await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync(Pix($"urn:test:kenshin-a:{run}|A1", "urn:test:nobody-assigns-here")), HttpStatusCode.Forbidden);
        Assert.StartsWith("targetSystem not found", target.Issue[0].Diagnostics);
        // Unknown source domain: 400; no or a malformed sourceIdentifier: 400.
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync(Pix("urn:test:nobody-assigns-here|1")), HttpStatusCode.BadRequest);
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync("Patient/$ihe-pix"), HttpStatusCode.BadRequest);
        await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync(Pix("no-bar")), HttpStatusCode.BadRequest);
    }

    [Fact]
    public async System.Threading.Tasks.Task An_institution_learns_only_its_own_domains_and_the_phr_id_and_nothing_of_other_institutions()
    {
        var (person, a, b, run) = await LinkedAsync();
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        // Hospital B from its own number: the person's Patient (the PHR id), never A's Patient or number, and
        // no identifier outside B's own domains (other tests link more of B's Patients to the same person).
        var fromB = Described(await Fhir.ExpectAsync<Parameters>(await other.GetAsync(Pix($"urn:test:hospital-b:{run}|B1")), HttpStatusCode.OK));
        Assert.Contains($"targetId Patient/{person.Id}", fromB);
        Assert.DoesNotContain($"targetId Patient/{a.Id}", fromB);
        Assert.All(fromB.Where(d => d.StartsWith("targetIdentifier", StringComparison.Ordinal)), d => Assert.StartsWith("targetIdentifier urn:test:hospital-b:", d));

        // A's domain as target, A's number as source: answered exactly as an unknown domain and an unknown number.
        async Task<string> Answer(string url)
        {
            var response = await other.GetAsync(url);
            var oo = await Fhir.ReadAsync<OperationOutcome>(response);
            return $"{(int)response.StatusCode} {oo.Issue[0].Code} {oo.Issue[0].Diagnostics}";
        }
        Assert.Equal((await Answer(Pix($"urn:test:hospital-b:{run}|B1", "urn:test:unknown"))).Replace("urn:test:unknown", "X"),
            (await Answer(Pix($"urn:test:hospital-b:{run}|B1", $"urn:test:kenshin-a:{run}"))).Replace($"urn:test:kenshin-a:{run}", "X"));
        Assert.Equal(await Answer(Pix($"urn:test:hospital-b:{run}|no-such")), await Answer(Pix($"urn:test:kenshin-a:{run}|A1")));
    }

    [Fact]
    public async System.Threading.Tasks.Task The_person_sees_their_own_links_and_nothing_of_anyone_else()
    {
        var (_, _, _, run) = await LinkedAsync();
        using var me = await server.ClientAsync("test-person-linked");
        var mine = Described(await Fhir.ExpectAsync<Parameters>(await me.GetAsync(Pix($"{PersonSystem}|{PersonValue}")), HttpStatusCode.OK));
        Assert.Contains($"targetIdentifier urn:test:kenshin-a:{run}|A1", mine);
        Assert.Contains($"targetIdentifier urn:test:hospital-b:{run}|B1", mine);
        // Someone else's number answers as an unknown one.
        var stranger = Fhir.Unique("s");
        await InstitutionRecordAsync(server.Http, $"urn:test:kenshin-a:{run}", stranger);
        var notMine = await Fhir.ExpectAsync<OperationOutcome>(await me.GetAsync(Pix($"urn:test:kenshin-a:{run}|{stranger}")), HttpStatusCode.NotFound);
        var unknown = await Fhir.ExpectAsync<OperationOutcome>(await me.GetAsync(Pix($"urn:test:kenshin-a:{run}|no-such")), HttpStatusCode.NotFound);
        Assert.Equal(unknown.Issue[0].Diagnostics, notMine.Issue[0].Diagnostics);
    }

    static string? Examples => SharedRef.Find() is { } root && Directory.Exists(Path.Combine(root, "ihe", "PIXm-3.1.0", "examples"))
        ? Path.Combine(root, "ihe", "PIXm-3.1.0", "examples") : null;

    [SkippableFact]
    public async System.Threading.Tasks.Task The_PIXm_examples_are_answered_as_the_IG_shows()
    {
        Skip.If(Examples is null, "../shared/ref/ihe/PIXm-3.1.0 is not present");
        var json = new FhirJsonDeserializer(new DeserializerSettings());
        var xml = new FhirXmlDeserializer(new DeserializerSettings());
        // The Red, Green and Blue domains' Patients of Alice Mohr, as a source feeds them (writer: the fixture's institution).
        var sources = new[] { "Patient-MohrAlice-Red.json", "Patient-MohrAlice-Green.json", "Patient-MohrAlice-Blue.json" }
            .Select(f => (Patient)json.DeserializeResource(File.ReadAllText(Path.Combine(Examples!, f)))).ToArray();
        if ((await server.Operator.GetAsync($"Patient/{sources[0].Id}")).StatusCode != HttpStatusCode.OK)
        {
            await server.SeedAsync(sources);
            var alice = await Fhir.ExpectAsync<Patient>(await server.Operator.PostAsync("Patient", Fhir.Json(new Patient
            {
                Name = [new HumanName { Family = "MOHR", Given = ["ALICE"] }],
                Gender = AdministrativeGender.Female,
                BirthDate = "1958-01-30",
            })), HttpStatusCode.Created);
            foreach (var p in sources)
                await Fhir.ExpectAsync<Parameters>(await server.Operator.PostAsync("Patient/$link", Link(("person", Ref(alice)), ("patient", Ref(p)))), HttpStatusCode.OK);
        }

        foreach (var (request, response) in new[] { ("pixm-request-mohralice-red-all.xml", "pixm-response-mohralice-red-all.xml"),
                                                     ("pixm-request-mohralice-red-to-blue.xml", "pixm-response-mohralice-red-to-blue.xml") })
        {
            var input = (Parameters)xml.DeserializeResource(File.ReadAllText(Path.Combine(Examples!, request)));
            var query = string.Join("&", input.Parameter.Select(p => p.Name + "=" + Uri.EscapeDataString(((FhirString)p.Value).Value)));
            var answer = await server.Operator.GetAsync("Patient/$ihe-pix?" + query);
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
            var text = await answer.Content.ReadAsStringAsync();
            var ours = (Parameters)(text.TrimStart().StartsWith('<') ? xml.DeserializeResource(text) : json.DeserializeResource(text));
            var expected = Described((Parameters)xml.DeserializeResource(File.ReadAllText(Path.Combine(Examples!, response))));
            var described = Described(ours);
            // Every cross-reference the IG shows is there, each Patient followed by its identifier.
            foreach (var pair in expected.Chunk(2))
            {
                var at = described.IndexOf(pair[0]);
                Assert.True(at >= 0 && described[at + 1] == pair[1], $"{request}: {string.Join(", ", pair)} missing from {string.Join(", ", described)}");
            }
            // Only the requested domains' identifiers; besides the IG's, only the person's own Patient (no identifier).
            var targets = input.Parameter.Where(p => p.Name == "targetSystem").Select(p => ((FhirString)p.Value).Value).ToList();
            Assert.All(ours.Parameter.Where(p => p.Name == "targetIdentifier"), p => Assert.True(targets.Count == 0 || targets.Contains(((Identifier)p.Value).System)));
            Assert.DoesNotContain("targetId Patient/Patient-MohrAlice-Red", described);
        }
    }
}
