using System.Net;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// The 23 official IHE PCF 1.1.0 Consent examples (../shared/ref/ihe/PCF-1.1.0, read at test time),
/// each stored as published and its meaning enforced: which of the PCF example data (plus two probes
/// of ours: PSY-labelled data, and data performed by the consented practitioner) the practitioner
/// ex-practitioner sees when reading for treatment, and with break-glass; then, the Consent deleted,
/// nothing. test-physician acts as ex-practitioner (the test gives that Practitioner its identifier).
/// </summary>
[Collection("server")]
public sealed class PcfConsentTests(ServerFixture server)
{
    static readonly FhirJsonDeserializer Parser = new(new DeserializerSettings());

    static string? Folder =>
        SharedRef.Find() is { } root && Directory.Exists(Path.Combine(root, "ihe", "PCF-1.1.0", "sushi-compiled"))
            ? Path.Combine(root, "ihe", "PCF-1.1.0", "sushi-compiled") : null;

    // The probes: PCF's example data of Patient/ex-patient and two of ours.
    const string W = "Observation/ex-weight", W2 = "Observation/ex-weight-2", BP = "Observation/ex-bloodPressure",
        BS = "Observation/ex-bloodSugar", AU = "Observation/ex-alcoholUse", ENC = "Encounter/ex-encounter",
        DOC = "DocumentReference/ex-documentreference", PAT = "Patient/ex-patient",
        PSY = "Observation/pcf-psy", MINE = "Observation/pcf-mine";
    static readonly string[] All = [W, W2, BP, BS, AU, ENC, DOC, PAT, PSY, MINE];
    static string[] AllBut(params string[] hidden) => All.Except(hidden).ToArray();
    // N-labelled or unlabelled: everything but the Restricted alcohol-use and PSY data.
    static readonly string[] Normal = AllBut(AU, PSY);

    /// <summary>(example file, visible for treatment, visible with break-glass)</summary>
    public static TheoryData<string, string[], string[]> Examples() => new()
    {
        { "Consent-ex-consent-basic-treat.json", All, All },
        { "Consent-ex-consent-basic-ink.json", All, All },
        { "Consent-ex-consent-basic-treat-infant.json", All, All }, // given by the mother, about ex-patient's data
        { "Consent-ex-consent-basic-reject.json", [], [] },
        { "Consent-ex-consent-basic-research.json", [], [] }, // HRESCH: not a treating purpose
        { "Consent-ex-consent-expired-treat.json", [], [] }, // ended 2022-12-31
        { "Consent-ex-consent-intermediate-authoredby.json", [MINE], [MINE] },
        { "Consent-ex-consent-intermediate-not-authoredby.json", AllBut(MINE), AllBut(MINE) },
        { "Consent-ex-consent-intermediate-data.json", [ENC, W2, W, BP, BS, AU], [ENC, W2, W, BP, BS, AU] },
        { "Consent-ex-consent-intermediate-not-data.json", AllBut(AU), AllBut(AU) },
        // "related to the encounter": the encounter, what refers to it, and what it refers to.
        { "Consent-ex-consent-intermediate-encounter.json", [ENC, W, W2, BP, BS, AU, PAT], [ENC, W, W2, BP, BS, AU, PAT] },
        { "Consent-ex-consent-intermediate-not-encounter.json", [DOC, PSY, MINE], [DOC, PSY, MINE] },
        // Data of 2022 (by its clinical date; data without one is not "within").
        { "Consent-ex-consent-intermediate-timeframe.json", [AU, PSY, MINE], [AU, PSY, MINE] },
        { "Consent-ex-consent-intermediate-not-timeframe.json", AllBut(AU, PSY, MINE), AllBut(AU, PSY, MINE) },
        { "Consent-ex-consent-intermediate-purpose.json", [], [] }, // the research organisation, for purpose FooBar
        { "Consent-ex-consent-advanced-normal.json", Normal, Normal },
        { "Consent-ex-consent-advanced-normal-restricted.json", All, All },
        { "Consent-ex-consent-advanced-normal-not-restricted.json", Normal, Normal },
        { "Consent-ex-consent-advanced-normal-focused-restricted.json", All, All }, // R for ex-practitioner
        { "Consent-ex-consent-advanced-normal-focused-psy.json", AllBut(AU), AllBut(AU) },
        { "Consent-ex-consent-advanced-normal-focused-psy-or-sdv.json", AllBut(AU), AllBut(AU) },
        { "Consent-ex-consent-advanced-normal-break-glass-restricted.json", Normal, All }, // R only for the privileged group, breaking the glass
        { "Consent-ex-dissent-intermediate-break-glass.json", [], All },
    };

    static bool _loaded;

    /// <summary>
    /// PCF's example data, stored once: directories by the operator, the patient and clinical data as the
    /// institution's (seeded at their own ids: only the operator may choose ids over HTTP; MHD's tests use
    /// the same Patient/ex-patient and DocumentReference/ex-documentreference as the institution's).
    /// </summary>
    async System.Threading.Tasks.Task LoadAsync()
    {
        if (_loaded) return;
        Resource Load(string file) => Parser.DeserializeResource(File.ReadAllText(Path.Combine(Folder!, file)));
        async System.Threading.Tasks.Task Put(HttpClient client, Resource r)
        {
            var response = await client.PutAsync($"{r.TypeName}/{r.Id}", Fhir.Json(r));
            Assert.True(response.IsSuccessStatusCode, $"{r.TypeName}/{r.Id}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }
        var practitioner = (Practitioner)Load("Practitioner-ex-practitioner.json");
        practitioner.Identifier.Add(new Identifier("urn:oid:1.2.392.100495.20.3.41", "1234567")); // test-physician's actor
        await server.SeedAsync(Load("Patient-ex-patient.json"));
        foreach (var r in new[] { Load("Patient-ex-mother.json"), practitioner, Load("Practitioner-ex-author.json"),
                     Load("Organization-ex-organization.json"), Load("Organization-ex-org-researcher.json"), Load("Group-ex-privilegedUsers.json") })
            await Put(server.Operator, r);
        foreach (var file in new[] { "Encounter-ex-encounter.json", "Observation-ex-weight.json", "Observation-ex-weight-2.json", "Observation-ex-bloodPressure.json",
                     "Observation-ex-bloodSugar.json", "Observation-ex-alcoholUse.json", "DocumentReference-ex-documentreference.json" })
            await server.SeedAsync(Load(file));
        var confidentiality = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
        await server.SeedAsync(new Observation
        {
            Id = "pcf-psy",
            Meta = new Meta { Security = [new Coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "PSY"), new Coding(confidentiality, "R")] },
            Status = ObservationStatus.Final,
            Code = new CodeableConcept("http://loinc.org", "44249-1", "PHQ-9 quick depression assessment panel"),
            Subject = new ResourceReference("Patient/ex-patient"),
            Effective = new FhirDateTime("2022-03-01"),
            Performer = [new ResourceReference("Practitioner/ex-author")],
        });
        await server.SeedAsync(new Observation
        {
            Id = "pcf-mine",
            Meta = new Meta { Security = [new Coding(confidentiality, "N")] },
            Status = ObservationStatus.Final,
            Code = new CodeableConcept("http://loinc.org", "29463-7", "Body weight"),
            Subject = new ResourceReference("Patient/ex-patient"),
            Effective = new FhirDateTime("2022-08-01"),
            Performer = [new ResourceReference("Practitioner/ex-practitioner")],
        });
        _loaded = true;
    }

    async Task<string[]> VisibleAsync(HttpClient physician, bool breakGlass)
    {
        var seen = new List<string>();
        foreach (var key in All)
        {
            var request = new HttpRequestMessage(HttpMethod.Get, key);
            if (breakGlass) request.Headers.Add("X-Break-Glass", "PCF example test");
            var response = await physician.SendAsync(request);
            Assert.True(response.StatusCode is HttpStatusCode.OK or HttpStatusCode.NotFound, $"{key}: {(int)response.StatusCode}");
            if (response.StatusCode == HttpStatusCode.OK) seen.Add(key);
        }
        return [.. seen];
    }

    [SkippableTheory]
    [MemberData(nameof(Examples))]
    public async System.Threading.Tasks.Task Each_PCF_consent_example_means_what_it_says(string file, string[] forTreatment, string[] withBreakGlass)
    {
        Skip.If(Folder is null, "../shared/ref/ihe/PCF-1.1.0 is not present: the PCF examples cannot be read");
        await LoadAsync();
        using var physician = await server.ClientAsync("test-physician");
        Assert.Empty(await VisibleAsync(physician, false)); // no Consent: nothing

        var consent = (Consent)Parser.DeserializeResource(File.ReadAllText(Path.Combine(Folder!, file)));
        var stored = await server.Operator.PutAsync($"Consent/{consent.Id}", Fhir.Json(consent));
        Assert.True(stored.IsSuccessStatusCode, $"{file}: {(int)stored.StatusCode} {await stored.Content.ReadAsStringAsync()}");
        try
        {
            Assert.Equal(forTreatment.Order(), (await VisibleAsync(physician, false)).Order());
            Assert.Equal(withBreakGlass.Order(), (await VisibleAsync(physician, true)).Order());
            // A search agrees with the reads, and its total counts only what is visible.
            var observations = All.Where(k => k.StartsWith("Observation/", StringComparison.Ordinal)).Select(k => k.Split('/')[1]);
            var bundle = await Fhir.ExpectAsync<Bundle>(await physician.GetAsync($"Observation?_id={string.Join(",", observations)}&_total=accurate"), HttpStatusCode.OK);
            var expected = forTreatment.Where(k => k.StartsWith("Observation/", StringComparison.Ordinal)).Order().ToList();
            Assert.Equal(expected, bundle.Entry.Select(e => "Observation/" + e.Resource.Id).Order().ToList());
            Assert.Equal(expected.Count, bundle.Total);
        }
        finally
        {
            Assert.Equal(HttpStatusCode.NoContent, (await server.Operator.DeleteAsync($"Consent/{consent.Id}")).StatusCode);
        }
        Assert.Empty(await VisibleAsync(physician, true)); // revoked: at once
    }
}
