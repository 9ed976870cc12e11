using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Tests;

/// <summary>
/// Parameter × modifier/prefix tables (R4 search.html) over one small set of Patients: string (with the
/// Japanese folding), token, :missing and date prefixes on a date. Each cell is its own test case and
/// names itself when it fails.
/// </summary>
[Collection("server")]
public sealed class PatientSearchTests(ServerFixture server)
{
    const string V2 = "http://terminology.hl7.org/CodeSystem/v2-0203";

    sealed record Seed(string Run, SearchHttp.Labels Labels);

    static Task<Seed>? _seed;
    static readonly Lock Gate = new();

    // birth dates: muller 1980-05-10, mullins 1980-05, hira 1980, half 1975-12-31, kanji 2001-01-01,
    // smith 1980-05-11, nobody and anon none.
    Task<Seed> SeedAsync()
    {
        lock (Gate) return _seed ??= CreateAsync(server.Http);

        static async Task<Seed> CreateAsync(HttpClient http)
        {
            var run = Fhir.Unique("pat");
            var labels = new SearchHttp.Labels();
            Patient P(string? family, string? given, string? birth, AdministrativeGender? gender) => new()
            {
                Meta = SearchHttp.Tag(run),
                Name = family is null ? [] : [new HumanName { Family = family, Given = given is null ? [] : [given] }],
                BirthDate = birth,
                Gender = gender,
            };
            var muller = P("Müller", "Hans", "1980-05-10", AdministrativeGender.Male);
            muller.Active = true;
            muller.Identifier =
            [
                new Identifier("urn:test:mrn", "M-1") { Type = new CodeableConcept(V2, "MR", "Medical record number", "Medical record number") },
            ];
            var mullins = P("Mullins", "Ann", "1980-05", AdministrativeGender.Female);
            mullins.Identifier =
            [
                new Identifier("urn:test:other", "M-1") { Type = new CodeableConcept(V2, "PI", "Patient internal identifier", "患者内部ID") },
                new Identifier { Value = "X-9" },
            ];
            var kanji = P("山田", "花子", "2001-01-01", AdministrativeGender.Other);
            kanji.Name[0].Text = "山田　花子"; // full-width space, as typed in Japan
            await labels.CreateAsync(http, "muller", muller);
            await labels.CreateAsync(http, "mullins", mullins);
            await labels.CreateAsync(http, "hira", P("やまだ", "たろう", "1980", AdministrativeGender.Male));
            await labels.CreateAsync(http, "half", P("ﾔﾏﾀﾞ", "ﾊﾅｺ", "1975-12-31", AdministrativeGender.Female));
            await labels.CreateAsync(http, "kanji", kanji);
            await labels.CreateAsync(http, "smith", P("ＳＭＩＴＨ", "Zoë", "1980-05-11", AdministrativeGender.Unknown));
            await labels.CreateAsync(http, "nobody", P("Nobody", null, null, null));
            await labels.CreateAsync(http, "anon", P(null, null, null, AdministrativeGender.Unknown));
            return new Seed(run, labels);
        }
    }

    public static TheoryData<string, string> Strings => new()
    {
        // default: starts-with, case- and accent-insensitive, on every part of the name
        { "name=mul", "muller mullins" },
        { "name=MÜL", "muller mullins" },
        { "family=Muller", "muller" },
        { "given=hans", "muller" },
        { "name=ller", "" },
        { "name=mul,やまだ", "half hira muller mullins" },
        { "family=mul&given=ann", "mullins" },
        { "name:contains=ller", "muller" },
        { "name:contains=LIN", "mullins" },
        { "name:exact=Müller", "muller" },
        { "name:exact=Muller", "" },
        { "name:exact=müller", "" },
        { "name:exact=Mül", "" },
        // Japanese: katakana = hiragana, half-width = full-width; dakuten matter
        { "name=ヤマダ", "half hira" },
        { "name=やまだ", "half hira" },
        { "name=ﾔﾏﾀﾞ", "half hira" },
        { "family=やま", "half hira" },
        { "name=やまた", "" },
        { "family=山田", "kanji" },
        { "name=山田 花子", "kanji" },
        { "name=山田　花子", "kanji" },
        { "given=タロウ", "hira" },
        { "given=はなこ", "half" },
        { "name:exact=ﾔﾏﾀﾞ", "half" },
        { "name:contains=まだ", "half hira" },
        // full-width Latin is Latin
        { "name=smith", "smith" },
        { "name=ｓｍｉ", "smith" },
        { "given=zoe", "smith" },
    };

    [Theory]
    [MemberData(nameof(Strings))]
    public async Task String_search_matches(string cell, string expected) => await Check(cell, expected);

    public static TheoryData<string, string> Tokens => new()
    {
        { "identifier=M-1", "muller mullins" },
        { "identifier=urn:test:mrn|M-1", "muller" },
        { "identifier=urn:test:other|M-1", "mullins" },
        { "identifier=|X-9", "mullins" },
        { "identifier=|M-1", "" },
        { "identifier=urn:test:other|", "mullins" },
        { "identifier=urn:test:mrn|M-1,|X-9", "muller mullins" },
        { "identifier=m-1", "" },
        { "gender=male", "hira muller" },
        { "gender=male,female", "half hira muller mullins" },
        { "gender=http://hl7.org/fhir/administrative-gender|female", "half mullins" },
        { "gender:not=male", "anon half kanji mullins nobody smith" },
        { "identifier:not=M-1", "anon half hira kanji nobody smith" },
        { "active=true", "muller" },
        { "active:not=true", "anon half hira kanji mullins nobody smith" },
        { "identifier:text=medical rec", "muller" },
        { "identifier:text=患者", "mullins" },
        { "identifier:of-type=" + V2 + "|MR|M-1", "muller" },
        { "identifier:of-type=" + V2 + "|PI|M-1", "mullins" },
        { "identifier:of-type=" + V2 + "|MR|X-9", "" },
    };

    [Theory]
    [MemberData(nameof(Tokens))]
    public async Task Token_search_matches(string cell, string expected) => await Check(cell, expected);

    public static TheoryData<string, string> Missing => new()
    {
        { "birthdate:missing=true", "anon nobody" },
        { "birthdate:missing=false", "half hira kanji muller mullins smith" },
        { "name:missing=true", "anon" },
        { "family:missing=false", "half hira kanji muller mullins nobody smith" },
        { "gender:missing=true", "nobody" },
        { "identifier:missing=false", "muller mullins" },
        { "active:missing=true", "anon half hira kanji mullins nobody smith" },
    };

    [Theory]
    [MemberData(nameof(Missing))]
    public async Task Missing_modifier_matches(string cell, string expected) => await Check(cell, expected);

    public static TheoryData<string, string> Dates => new()
    {
        // eq: the resource's range lies within the parameter's range, at the parameter's precision
        { "birthdate=1980-05-10", "muller" },
        { "birthdate=eq1980-05", "muller mullins smith" },
        { "birthdate=1980", "hira muller mullins smith" },
        { "birthdate=ne1980-05", "half hira kanji" },
        { "birthdate=gt1980-05-10", "hira kanji mullins smith" },
        { "birthdate=lt1980-05-10", "half hira mullins" },
        { "birthdate=ge1980-05-10", "hira kanji muller mullins smith" },
        { "birthdate=le1980-05-10", "half hira muller mullins" },
        { "birthdate=sa1980-05-10", "kanji smith" },
        { "birthdate=eb1980-05-10", "half" },
        { "birthdate=ap2000-12", "kanji" },
        { "birthdate=1980-05-10,1975-12-31", "half muller" },
        { "birthdate=ge1980-05-10&birthdate=le1980-05-31", "hira muller mullins smith" },
        // with a time and zone: 23:00-02:00 is 01:00Z the next day; 08:59:59+09:00 is the day before in UTC
        { "birthdate=gt1980-05-10T23:00:00-02:00", "hira kanji mullins smith" },
        { "birthdate=le1980-05-10T08:59:59+09:00", "half hira mullins" },
        { "birthdate=1980-05-10T12:00:00Z", "" },
    };

    [Theory]
    [MemberData(nameof(Dates))]
    public async Task Date_prefix_matches(string cell, string expected) => await Check(cell, expected);

    async Task Check(string cell, string expected)
    {
        var seed = await SeedAsync();
        await SearchHttp.AssertCellAsync(server.Http, seed.Run, seed.Labels, "Patient?" + cell, expected);
    }
}

/// <summary>Date prefixes against a Period (Encounter.date → Encounter.period), closed and open-ended.</summary>
[Collection("server")]
public sealed class PeriodSearchTests(ServerFixture server)
{
    sealed record Seed(string Run, SearchHttp.Labels Labels);

    static Task<Seed>? _seed;
    static readonly Lock Gate = new();

    // day:     2023-03-01T09:00+09:00 .. 17:00+09:00   (= 00:00Z .. 08:00Z)
    // open:    2023-03-05 .. (no end)
    // month:   2023-02-15 .. 2023-03-15
    // endonly: (no start) .. 2023-01-10
    Task<Seed> SeedAsync()
    {
        lock (Gate) return _seed ??= CreateAsync(server.Http);

        static async Task<Seed> CreateAsync(HttpClient http)
        {
            var run = Fhir.Unique("enc");
            var labels = new SearchHttp.Labels();
            Encounter E(string? start, string? end) => new()
            {
                Meta = SearchHttp.Tag(run),
                Status = Encounter.EncounterStatus.Finished,
                Class = new Coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB"),
                Period = new Period { Start = start, End = end },
            };
            await labels.CreateAsync(http, "day", E("2023-03-01T09:00:00+09:00", "2023-03-01T17:00:00+09:00"));
            await labels.CreateAsync(http, "open", E("2023-03-05", null));
            await labels.CreateAsync(http, "month", E("2023-02-15", "2023-03-15"));
            await labels.CreateAsync(http, "endonly", E(null, "2023-01-10"));
            return new Seed(run, labels);
        }
    }

    public static TheoryData<string, string> Dates => new()
    {
        { "date=2023-03-01", "day" },
        { "date=2023-03", "day" },
        { "date=2023", "day month" },
        { "date=ne2023", "endonly open" },
        { "date=gt2023-03-10", "month open" },
        { "date=lt2023-02-01", "endonly" },
        { "date=ge2023-03-05", "month open" },
        { "date=le2023-01-10", "endonly" },
        { "date=sa2023-02-28", "day open" },
        { "date=eb2023-03-01", "endonly" },
        { "date=ap2021-01-01", "endonly" },
        // ge = gt or eq: month (02-15..03-15) is neither after March nor within it; le = lt or eq
        { "date=ge2023-03", "day open" },
        { "date=le2023-03", "day endonly month" },
        { "date=le2023-02-20", "endonly month" },
        { "date=le2023-03-01", "day endonly month" },
        // day starts exactly at 09:00+09:00 (00:00Z): not before that second, and not within it
        { "date=lt2023-03-01T09:00:00+09:00", "endonly month" },
        { "date=le2023-03-01T09:00:00+09:00", "endonly month" },
        { "date=le2023-03-01T17:00:00+09:00", "day endonly month" },
        { "date=ge2023-03-01T09:00:00+09:00", "day month open" },
        { "date=ge2023-03-01T17:00:00+09:00", "month open" },
        { "date=gt2023-03-01T07:59:59Z", "day month open" },
        { "date=gt2023-03-01T08:00:00Z", "month open" },
        { "date=ge2099-01-01", "open" },
        { "date=le1900-01-01", "endonly" },
    };

    [Theory]
    [MemberData(nameof(Dates))]
    public async Task Date_prefix_matches_a_period(string cell, string expected)
    {
        var seed = await SeedAsync();
        await SearchHttp.AssertCellAsync(server.Http, seed.Run, seed.Labels, "Encounter?" + cell, expected);
    }
}

/// <summary>Quantity (Observation value-quantity): number|system|code, implicit precision, prefixes.</summary>
[Collection("server")]
public sealed class QuantitySearchTests(ServerFixture server)
{
    const string Ucum = "http://unitsofmeasure.org";

    sealed record Seed(string Run, SearchHttp.Labels Labels);

    static Task<Seed>? _seed;
    static readonly Lock Gate = new();

    Task<Seed> SeedAsync()
    {
        lock (Gate) return _seed ??= CreateAsync(server.Http);

        static async Task<Seed> CreateAsync(HttpClient http)
        {
            var run = Fhir.Unique("qty");
            var labels = new SearchHttp.Labels();
            Observation O(decimal value, string unit, string? system) => new()
            {
                Meta = SearchHttp.Tag(run),
                Status = ObservationStatus.Final,
                Code = new CodeableConcept("http://loinc.org", "2339-0", "Glucose [Mass/volume] in Blood", "血糖値"),
                Value = new Quantity { Value = value, Unit = unit, System = system, Code = system is null ? null : unit },
            };
            await labels.CreateAsync(http, "mg54", O(5.4m, "mg", Ucum));
            await labels.CreateAsync(http, "g54", O(5.4m, "g", Ucum));
            await labels.CreateAsync(http, "mg6", O(6m, "mg", Ucum));
            await labels.CreateAsync(http, "mg535", O(5.35m, "mg", Ucum));
            await labels.CreateAsync(http, "local54", O(5.4m, "mg", null));
            return new Seed(run, labels);
        }
    }

    public static TheoryData<string, string> Quantities => new()
    {
        // 5.4 stands for [5.35, 5.45): 5.35 is "equal" to it; 5.40 stands for [5.395, 5.405)
        { "value-quantity=5.4|" + Ucum + "|mg", "mg535 mg54" },
        { "value-quantity=5.40|" + Ucum + "|mg", "mg54" },
        { "value-quantity=5.4||mg", "local54 mg535 mg54" },
        { "value-quantity=5.4", "g54 local54 mg535 mg54" },
        { "value-quantity=eq5.4|" + Ucum + "|g", "g54" },
        { "value-quantity=gt5.4|" + Ucum + "|mg", "mg6" },
        { "value-quantity=lt5.4|" + Ucum + "|mg", "mg535" },
        { "value-quantity=ge5.4|" + Ucum + "|mg", "mg54 mg6" },
        { "value-quantity=le5.4|" + Ucum + "|mg", "mg535 mg54" },
        { "value-quantity=ne5.4|" + Ucum + "|mg", "mg6" },
        { "value-quantity=sa5.4|" + Ucum + "|mg", "mg6" },
        { "value-quantity=eb5.4|" + Ucum + "|mg", "mg535" },
        { "value-quantity=ap5.4|" + Ucum + "|mg", "mg535 mg54" },
        { "value-quantity=gt5|" + Ucum + "|mg", "mg535 mg54 mg6" },
        { "value-quantity=6|" + Ucum + "|mg", "mg6" },
        { "value-quantity=5.4|" + Ucum + "|kg", "" },
        { "value-quantity:missing=false", "g54 local54 mg535 mg54 mg6" },
        // :text reads CodeableConcept.text as well as Coding.display (R4 search.html#token)
        { "code:text=glucose", "g54 local54 mg535 mg54 mg6" },
        { "code:text=血糖", "g54 local54 mg535 mg54 mg6" },
    };

    [Theory]
    [MemberData(nameof(Quantities))]
    public async Task Quantity_search_matches(string cell, string expected)
    {
        var seed = await SeedAsync();
        await SearchHttp.AssertCellAsync(server.Http, seed.Run, seed.Labels, "Observation?" + cell, expected);
    }
}

/// <summary>Uri parameters: exact by default, :below and :above, and _profile on any resource.</summary>
[Collection("server")]
public sealed class UriSearchTests(ServerFixture server)
{
    sealed record Seed(string Run, SearchHttp.Labels Labels);

    static Task<Seed>? _seed;
    static readonly Lock Gate = new();

    Task<Seed> SeedAsync()
    {
        lock (Gate) return _seed ??= CreateAsync(server.Http);

        static async Task<Seed> CreateAsync(HttpClient http)
        {
            var run = Fhir.Unique("uri");
            var labels = new SearchHttp.Labels();
            var root = $"http://example.org/fhir/{run}";
            Questionnaire Q(string url, string? profile = null)
            {
                var q = new Questionnaire { Meta = SearchHttp.Tag(run), Url = url, Status = PublicationStatus.Active };
                if (profile is not null) q.Meta.Profile = [profile];
                return q;
            }
            await labels.CreateAsync(http, "phq9", Q(root + "/Questionnaire/phq9", root + "/StructureDefinition/sdc"));
            await labels.CreateAsync(http, "phq9v2", Q(root + "/Questionnaire/phq9/v2"));
            await labels.CreateAsync(http, "other", Q(root + "/Other/x"));
            return new Seed(run, labels);
        }
    }

    public static TheoryData<string, string> Uris => new()
    {
        { "url=http://example.org/fhir/{run}/Questionnaire/phq9", "phq9" },
        { "url=http://example.org/fhir/{run}/Questionnaire", "" },
        { "url:below=http://example.org/fhir/{run}/Questionnaire", "phq9 phq9v2" },
        { "url:below=http://example.org/fhir/{run}", "other phq9 phq9v2" },
        { "url:above=http://example.org/fhir/{run}/Questionnaire/phq9/v2/extra", "phq9 phq9v2" },
        { "url:above=http://example.org/fhir/{run}/Questionnaire/phq9", "phq9" },
        { "_profile=http://example.org/fhir/{run}/StructureDefinition/sdc", "phq9" },
        { "_profile:missing=true", "other phq9v2" },
    };

    [Theory]
    [MemberData(nameof(Uris))]
    public async Task Uri_search_matches(string cell, string expected)
    {
        var seed = await SeedAsync();
        await SearchHttp.AssertCellAsync(server.Http, seed.Run, seed.Labels, "Questionnaire?" + cell, expected);
    }
}
