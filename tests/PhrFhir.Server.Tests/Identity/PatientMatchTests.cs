using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// IHE PDQm ITI-119 Patient/$match (docs/identity.md): scored, graded candidates from kanji and kana names,
/// birth date, sex, identifiers, phone and postal code; onlyCertainMatches and count; only Patients the
/// requester may read are candidates, and "hidden" answers like "no match".
/// </summary>
[Collection("server")]
public sealed class PatientMatchTests(ServerFixture server)
{
    const string Representation = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";
    const string MatchGrade = "http://hl7.org/fhir/StructureDefinition/match-grade";
    const string Katakana = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン";
    const string HalfWidth = "ｱｲｳｴｵｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓﾔﾕﾖﾗﾘﾙﾚﾛﾜﾝ";

    /// <summary>A name no other test uses: kanji, and its reading in katakana (and the indexes to spell it half-width).</summary>
    public sealed record Name(string Kanji, string Kana, int[] Letters)
    {
        public string Hiragana => new([.. Kana.Select(c => (char)(c - 0x60))]);
        public string HalfWidthKana => new([.. Letters.Select(i => HalfWidth[i])]);

        public static Name Unique()
        {
            var letters = Enumerable.Range(0, 5).Select(_ => Random.Shared.Next(Katakana.Length)).ToArray();
            var kanji = new string([.. Enumerable.Range(0, 3).Select(_ => (char)Random.Shared.Next(0x4E00, 0x9F00))]);
            return new(kanji, new([.. letters.Select(i => Katakana[i])]), letters);
        }
    }

    /// <summary>A Japanese Patient as JP Core writes one: the kanji name (IDE) and its kana reading (SYL).</summary>
    public static Patient Person(Name family, Name given, string birthDate, string? system = null, string? value = null,
        string phone = "090-0000-0000", string postalCode = "100-0001") => new()
        {
            Identifier = system is null ? [] : [new Identifier(system, value)],
            Gender = AdministrativeGender.Male,
            BirthDate = birthDate,
            Name =
        [
            new HumanName { Family = family.Kanji, Given = [given.Kanji], Extension = [new Extension(Representation, new Code("IDE"))] },
            new HumanName { Family = family.Kana, Given = [given.Kana], Extension = [new Extension(Representation, new Code("SYL"))] },
        ],
            Telecom = [new ContactPoint(ContactPoint.ContactPointSystem.Phone, ContactPoint.ContactPointUse.Mobile, phone)],
            Address = [new Address { PostalCode = postalCode }],
        };

    static StringContent Match(Patient resource, params (string Name, DataType Value)[] more) => Fhir.Json(new Parameters
    {
        Parameter = [new() { Name = "resource", Resource = resource }, .. more.Select(p => new Parameters.ParameterComponent { Name = p.Name, Value = p.Value })],
    });

    static async Task<Bundle> MatchAsync(HttpClient client, StringContent body)
    {
        var bundle = await Fhir.ExpectAsync<Bundle>(await client.PostAsync("Patient/$match", body), HttpStatusCode.OK);
        Assert.Equal(Bundle.BundleType.Searchset, bundle.Type);
        Assert.All(bundle.Entry, e => Assert.Equal(Bundle.SearchEntryMode.Match, e.Search.Mode));
        return bundle;
    }

    static string Grade(Bundle.EntryComponent e) => ((Code)e.Search.GetExtension(MatchGrade).Value).Value;

    static async Task<Patient> CreateAsync(HttpClient client, Patient patient) =>
        await Fhir.ExpectAsync<Patient>(await client.PostAsync("Patient", Fhir.Json(patient)), HttpStatusCode.Created);

    [Fact]
    public async System.Threading.Tasks.Task A_same_name_candidate_with_another_birth_date_ranks_below_the_true_person()
    {
        var (family, given) = (Name.Unique(), Name.Unique());
        var truth = await CreateAsync(server.Http, Person(family, given, "1971-03-14", phone: "090-1111-2222"));
        var slip = await CreateAsync(server.Http, Person(family, given, "1971-03-15")); // a typing slip in the day
        var other = await CreateAsync(server.Http, Person(family, given, "1958-11-02")); // same name, another person

        // The institution asks in hiragana and half-width katakana, with the phone written without hyphens.
        var input = new Patient
        {
            Gender = AdministrativeGender.Male,
            BirthDate = "1971-03-14",
            Name = [new HumanName { Family = family.Hiragana, Given = [given.HalfWidthKana] }],
            Telecom = [new ContactPoint(ContactPoint.ContactPointSystem.Phone, null, "09011112222")],
        };
        var found = await MatchAsync(server.Http, Match(input));
        var ids = found.Entry.Select(e => e.Resource.Id).ToList();
        Assert.Equal(truth.Id, ids[0]);
        Assert.Equal("probable", Grade(found.Entry[0]));
        var slipped = found.Entry.Single(e => e.Resource.Id == slip.Id);
        Assert.Equal("possible", Grade(slipped));
        Assert.True(found.Entry[0].Search.Score > slipped.Search.Score);
        Assert.True(ids.IndexOf(other.Id) is -1 or > 1, "the same name with another birth date ranked above the true person");
        Assert.All(found.Entry, e => Assert.InRange(e.Search.Score!.Value, 0m, 1m));

        // The kanji name finds the same person, and the Patient posted alone is the same request (PDQm MatchParametersIn).
        input.Name = [new HumanName { Family = family.Kanji, Given = [given.Kanji] }];
        var alone = await MatchAsync(server.Http, Fhir.Json(input));
        Assert.Equal(truth.Id, alone.Entry[0].Resource.Id);
        Assert.Single(await MatchAsync(server.Http, Match(input, ("count", new Integer(1)))) is { } one ? one.Entry : []);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_shared_identifier_makes_a_certain_match_and_another_value_in_its_domain_certainly_not()
    {
        var (family, given) = (Name.Unique(), Name.Unique());
        var system = "urn:test:match:" + Fhir.Unique();
        var truth = await CreateAsync(server.Http, Person(family, given, "1985-06-15", system, "1"));
        var namesake = await CreateAsync(server.Http, Person(family, given, "1985-06-15", system, "2"));

        var input = Person(family, given, "1985-06-15", system, "1");
        var found = await MatchAsync(server.Http, Match(input));
        Assert.Equal([(truth.Id, "certain"), (namesake.Id, "certainly-not")], found.Entry.Select(e => (e.Resource.Id, Grade(e))));
        Assert.Equal(0m, found.Entry[1].Search.Score);

        var certain = await MatchAsync(server.Http, Match(input, ("onlyCertainMatches", new FhirBoolean(true))));
        Assert.Equal([truth.Id], certain.Entry.Select(e => e.Resource.Id));
        // Without the identifier nothing is certain: onlyCertainMatches answers none rather than a guess.
        input.Identifier = [];
        Assert.Empty((await MatchAsync(server.Http, Match(input, ("onlyCertainMatches", new FhirBoolean(true))))).Entry);
    }

    [Fact]
    public async System.Threading.Tasks.Task An_institution_is_offered_only_patients_it_may_read_and_hidden_looks_like_no_match()
    {
        var (family, given) = (Name.Unique(), Name.Unique());
        var theirs = await CreateAsync(server.Http, Person(family, given, "1990-01-20"));
        var input = Person(family, given, "1990-01-20");

        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var hidden = await other.PostAsync("Patient/$match", Match(input));
        var nobody = await other.PostAsync("Patient/$match", Match(Person(Name.Unique(), Name.Unique(), "1990-01-20")));
        Assert.Equal((HttpStatusCode.OK, HttpStatusCode.OK), (hidden.StatusCode, nobody.StatusCode));
        var (a, b) = (await Fhir.ReadAsync<Bundle>(hidden), await Fhir.ReadAsync<Bundle>(nobody));
        Assert.Equal((0, 0), (a.Entry.Count, b.Entry.Count));
        Assert.Equal((a.Total, a.Link.Count), (b.Total, b.Link.Count));

        // The operator sees every registration.
        var all = await MatchAsync(server.Operator, Match(input));
        Assert.Contains(all.Entry, e => e.Resource.Id == theirs.Id);
        // PDQm's own example input (an English name, no such person here) is a valid request with no match.
        var example = File.ReadAllText(Path.Combine(SharedRef.Find() ?? throw new InvalidOperationException("../shared/ref not found"),
            "ihe", "PDQm-3.2.0", "sushi-compiled", "Parameters-ex-match-input-onlyCertainMatches.json"));
        Assert.Empty((await MatchAsync(server.Operator, Fhir.Json(example))).Entry);
    }

    public static TheoryData<string, string> BadInputs => new()
    {
        { "observation", """{"resourceType":"Observation","status":"final","code":{"text":"x"}}""" },
        { "no resource", """{"resourceType":"Parameters","parameter":[{"name":"count","valueInteger":3}]}""" },
        { "count zero", """{"resourceType":"Parameters","parameter":[{"name":"resource","resource":{"resourceType":"Patient","birthDate":"1970-01-01"}},{"name":"count","valueInteger":0}]}""" },
        { "count as text", """{"resourceType":"Parameters","parameter":[{"name":"resource","resource":{"resourceType":"Patient","birthDate":"1970-01-01"}},{"name":"count","valueString":"3"}]}""" },
        { "unknown parameter", """{"resourceType":"Parameters","parameter":[{"name":"resource","resource":{"resourceType":"Patient","birthDate":"1970-01-01"}},{"name":"limit","valueInteger":3}]}""" },
        { "nothing to match on", """{"resourceType":"Patient","gender":"male"}""" },
        { "family name alone", """{"resourceType":"Patient","name":[{"family":"山田"}]}""" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public async System.Threading.Tasks.Task Bad_match_input_is_a_400_in_english_and_japanese(string why, string body)
    {
        var response = await server.Http.PostAsync("Patient/$match", Fhir.Json(body));
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(response, HttpStatusCode.BadRequest);
        Assert.True(outcome.Issue[0].Diagnostics is { } text && text.Any(c => c is >= '\u3040' and <= '\u9fff') && text.Any(char.IsAsciiLetter), why);
    }
}
