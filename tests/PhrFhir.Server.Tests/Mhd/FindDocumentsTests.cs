using System.Net;
using System.Numerics;
using System.Text.Json;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Tests.Mhd;

/// <summary>
/// IHE MHD 4.2.3 Document Responder: ITI-67 Find Document References and ITI-66 Find Document Lists,
/// one table cell per query parameter the transactions define (2:3.67.4.1.2.1, 2:3.66.4.1.2.1), each over
/// a data set that holds documents and lists that match and that do not, asserting the exact set
/// returned. Data is created with plain REST and tagged per run (SearchHttp.Tag); every query is scoped by
/// that tag. Also GET /metadata: the MHD actors this server declares it implements.
/// </summary>
[Collection("server")]
public sealed class FindDocumentsTests(ServerFixture server)
{
    const string Rfc3986 = "urn:ietf:rfc:3986";
    const string ListTypes = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes";
    const string Mhd = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/";
    // JP Core: 医療機関の患者 ID is urn:oid:1.2.392.100495.20.3.51.1 + the 10-digit institution code (a fictitious one here).
    const string PatientIdSystem = "urn:oid:1.2.392.100495.20.3.51.11399999999";
    const string Loinc = "http://loinc.org";
    const string Snomed = "http://snomed.info/sct";
    const string SsMixDepartment = "urn:oid:1.2.392.200250.2.2.2"; // SS-MIX2 診療科コード (JP Core NamingSystem)
    const string FormatCode = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode";
    const string Confidentiality = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
    const string EventSystem = "http://phr.example.jp/CodeSystem/checkup-event";
    const string ReferralNumber = "http://phr.example.jp/NamingSystem/referral-number";

    /// <summary>The run's tag and labels, and the values queries need ({oid}, {uuid…}) besides resource ids.</summary>
    sealed record Seed(string Run, SearchHttp.Labels Labels, Dictionary<string, string> Values)
    {
        public string Fill(string cell) => Values.Aggregate(cell, (s, kv) => s.Replace("{" + kv.Key + "}", kv.Value, StringComparison.Ordinal));
    }

    static Task<Seed>? _seed;
    static readonly Lock Gate = new();

    Task<Seed> SeedAsync()
    {
        lock (Gate) return _seed ??= CreateAsync(server.Http);
    }

    /// <summary>A UUID-derived OID (ITU-T X.667, arc 2.25): unique per run and a valid urn:oid.</summary>
    static string NewOid() => "2.25." + new BigInteger(Guid.NewGuid().ToByteArray(), isUnsigned: true);

    static Identifier Urn(string value, Identifier.IdentifierUse? use = null) => new(Rfc3986, value) { Use = use };

    static CodeableConcept Code(string system, string code, string? display) => new(system, code, display);

    /// <summary>
    /// Two patients (山田 花子 with four documents, 鈴木 一郎 with one), two practitioners, an order, and
    /// the documents and lists (SubmissionSets, Folders) whose metadata the tables below tell apart:
    ///
    ///   doc   patient status      type              setting facility event    conf  format  author      period             date   creation
    ///   d1    pa      current     53576-5 健診結果   01      264358009 特定健診 N     mimeSuff Patient pa  2024-04-01         04-10  2024-04-05
    ///   d2    pa      current     57133-1 紹介状     09      22232009  -        R     pdf      Pract. 佐藤  2024-05-10         05-12  2024-05-11
    ///   d3    pa      superseded  18842-5 退院時     09      22232009  -        N     mimeSuff Pract. 田中  2024-05-01..05-20  05-21  2024-05-20
    ///   d4    pb      current     53576-5 健診結果   01      264358009 事業者健診 N   pdf      Pract. 佐藤  2023-04-01         2023   2023-04-02
    ///   d5    pa      entered-in-error (no other metadata)
    /// d2 relates to the order by reference, d3 to a referral number by identifier only; d3 also has the
    /// hospital (an Organization) as author. Lists: SubmissionSets ssa (pa, by 佐藤 健) and ssb (pb, by
    /// the patient 鈴木 一郎), Folders fa (pa, current) and fb (pa, retired).
    /// </summary>
    static async Task<Seed> CreateAsync(HttpClient http)
    {
        var run = Fhir.Unique("mhd");
        var labels = new SearchHttp.Labels();
        var oid = NewOid();
        var values = new Dictionary<string, string> { ["oid"] = oid };
        Meta Tag() => SearchHttp.Tag(run);

        var pa = await labels.CreateAsync(http, "pa", new Patient
        {
            Meta = Tag(),
            Identifier = [new Identifier(PatientIdSystem, run + "A")],
            Name = [new HumanName { Use = HumanName.NameUse.Official, Family = "山田", Given = ["花子"] }],
        });
        var pb = await labels.CreateAsync(http, "pb", new Patient
        {
            Meta = Tag(),
            Identifier = [new Identifier(PatientIdSystem, run + "B")],
            Name = [new HumanName { Use = HumanName.NameUse.Official, Family = "鈴木", Given = ["一郎"] }],
        });
        var sato = await labels.CreateAsync(http, "sato", new Practitioner { Meta = Tag(), Name = [new HumanName { Family = "佐藤", Given = ["健"] }] });
        var tanaka = await labels.CreateAsync(http, "tanaka", new Practitioner { Meta = Tag(), Name = [new HumanName { Family = "田中", Given = ["花子"] }] });
        var hospital = await labels.CreateAsync(http, "hospital", new Organization { Meta = Tag(), Name = "花子記念病院" }); // an author with no person name
        var order = await labels.CreateAsync(http, "order", new ServiceRequest
        {
            Meta = Tag(),
            Status = RequestStatus.Active,
            Intent = RequestIntent.Order,
            Subject = new ResourceReference("Patient/" + pa),
            Code = Code(Loinc, "57133-1", "診療情報提供書"),
        });

        // One row per document, as in the table above; codes are (system, code, display).
        var docs = new (string Label, string Patient, DocumentReferenceStatus Status, string[] Authors, CodeableConcept Category, CodeableConcept Type,
            CodeableConcept Setting, CodeableConcept Facility, CodeableConcept? Event, string ConfidentialityCode, string Format, Period Period, string Date, string Creation, ResourceReference? Related)[]
        {
            ("d1", pa, DocumentReferenceStatus.Current, ["Patient/" + pa], Code(Loinc, "LP173421-1", "Report"), Code(Loinc, "53576-5", "健康診断結果報告書"),
                Code(SsMixDepartment, "01", "内科"), Code(Snomed, "264358009", "General practice premises"), Code(EventSystem, "tokutei-kenshin", "特定健診"),
                "N", "urn:ihe:iti:xds:2017:mimeTypeSufficient", new Period { Start = "2024-04-01", End = "2024-04-01" },
                "2024-04-10T09:00:00+09:00", "2024-04-05T10:00:00+09:00", null),
            ("d2", pa, DocumentReferenceStatus.Current, ["Practitioner/" + sato], Code(Loinc, "LP173418-7", "Note"), Code(Loinc, "57133-1", "診療情報提供書"),
                Code(SsMixDepartment, "09", "循環器内科"), Code(Snomed, "22232009", "Hospital"), null,
                "R", "urn:ihe:iti:xds-sd:pdf:2008", new Period { Start = "2024-05-10", End = "2024-05-10" },
                "2024-05-12T15:30:00+09:00", "2024-05-11T18:00:00+09:00", new ResourceReference("ServiceRequest/" + order)),
            // referenceIdList carried as an identifier only (MHD 2:3.67.4.2.2.1.5), as the MHD examples do.
            ("d3", pa, DocumentReferenceStatus.Superseded, ["Practitioner/" + tanaka, "Organization/" + hospital], Code(Loinc, "LP173418-7", "Note"), Code(Loinc, "18842-5", "退院時サマリー"),
                Code(SsMixDepartment, "09", "循環器内科"), Code(Snomed, "22232009", "Hospital"), null,
                "N", "urn:ihe:iti:xds:2017:mimeTypeSufficient", new Period { Start = "2024-05-01", End = "2024-05-20" },
                "2024-05-21T11:00:00+09:00", "2024-05-20T17:00:00+09:00", new ResourceReference { Identifier = new Identifier(ReferralNumber, run + "-R1") }),
            ("d4", pb, DocumentReferenceStatus.Current, ["Practitioner/" + sato], Code(Loinc, "LP173421-1", "Report"), Code(Loinc, "53576-5", "健康診断結果報告書"),
                Code(SsMixDepartment, "01", "内科"), Code(Snomed, "264358009", "General practice premises"), Code(EventSystem, "jigyousha-kenshin", "事業者健診"),
                "N", "urn:ihe:iti:xds-sd:pdf:2008", new Period { Start = "2023-04-01", End = "2023-04-01" },
                "2023-04-05T10:00:00+09:00", "2023-04-02T10:00:00+09:00", null),
        };
        foreach (var d in docs)
        {
            var n = d.Label[1..];
            values["uuid" + n] = Guid.NewGuid().ToString();
            await labels.CreateAsync(http, d.Label, new DocumentReference
            {
                Meta = Tag(),
                MasterIdentifier = Urn($"urn:oid:{oid}.{n}"),                                       // the XDS uniqueId
                Identifier = [Urn("urn:uuid:" + values["uuid" + n], Identifier.IdentifierUse.Official)], // the XDS entryUUID
                Status = d.Status,
                Subject = new ResourceReference("Patient/" + d.Patient),
                Author = [.. d.Authors.Select(a => new ResourceReference(a))],
                Date = DateTimeOffset.Parse(d.Date, System.Globalization.CultureInfo.InvariantCulture),
                Category = [d.Category],
                Type = d.Type,
                SecurityLabel = [Code(Confidentiality, d.ConfidentialityCode, null)],
                Context = new DocumentReference.ContextComponent
                {
                    PracticeSetting = d.Setting,
                    FacilityType = d.Facility,
                    Period = d.Period,
                    Event = d.Event is null ? [] : [d.Event],
                    Related = d.Related is null ? [] : [d.Related],
                },
                Content =
                [
                    new DocumentReference.ContentComponent
                    {
                        Attachment = new Attachment { ContentType = "application/pdf", Url = $"Binary/{run}-{n}", Creation = d.Creation, Title = "文書 " + n },
                        Format = new Coding(FormatCode, d.Format),
                    },
                ],
            });
        }
        await labels.CreateAsync(http, "d5", new DocumentReference
        {
            Meta = Tag(),
            Status = DocumentReferenceStatus.EnteredInError,
            Subject = new ResourceReference("Patient/" + pa),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "text/plain", Url = $"Binary/{run}-5" } }],
        });

        // ITI-66: SubmissionSets carry the IHE designationType and sourceId extensions; Folders do not.
        List Set(string patient, string source, string date, int n, string designation, string sourceId) => new()
        {
            Meta = Tag(),
            Status = List.ListStatus.Current,
            Mode = ListMode.Working,
            Code = new CodeableConcept(ListTypes, "submissionset"),
            Extension =
            [
                new Extension(Mhd + "ihe-sourceId", Urn($"urn:oid:{oid}.{sourceId}")),
                new Extension(Mhd + "ihe-designationType", new CodeableConcept(Snomed, designation)),
            ],
            Identifier = [Urn($"urn:oid:{oid}.{n}", Identifier.IdentifierUse.Usual), Urn("urn:uuid:" + Guid.NewGuid(), Identifier.IdentifierUse.Official)],
            Subject = new ResourceReference("Patient/" + patient),
            Source = new ResourceReference(source),
            Date = date,
        };
        List Folder(string patient, List.ListStatus status, string date, string uuidKey)
        {
            values[uuidKey] = Guid.NewGuid().ToString();
            return new List
            {
                Meta = Tag(),
                Status = status,
                Mode = ListMode.Working,
                Code = new CodeableConcept(ListTypes, "folder"),
                Identifier = [Urn("urn:uuid:" + values[uuidKey], Identifier.IdentifierUse.Official)],
                Subject = new ResourceReference("Patient/" + patient),
                Date = date,
                Title = "健診フォルダ",
            };
        }
        await labels.CreateAsync(http, "ssa", Set(pa, "Practitioner/" + sato, "2024-04-10T09:00:00+09:00", 100, "371530004", "201"));
        await labels.CreateAsync(http, "ssb", Set(pb, "Patient/" + pb, "2023-04-05T12:00:00+09:00", 101, "225728007", "202"));
        await labels.CreateAsync(http, "fa", Folder(pa, List.ListStatus.Current, "2024-05-01T08:00:00+09:00", "uuidfa"));
        await labels.CreateAsync(http, "fb", Folder(pa, List.ListStatus.Retired, "2022-12-01T08:00:00+09:00", "uuidfb"));

        return new Seed(run, labels, values);
    }

    /// <summary>Parameters an IHE MHD SearchParameter defines (R4 has none): loaded from ../shared/ref.</summary>
    static readonly string[] IgParameters = ["creation", "designationType", "sourceId"];

    async Task AssertCellAsync(string cell, string expected)
    {
        Skip.If(SharedRef.Find() is null && IgParameters.Any(p => cell.Contains(p + "=", StringComparison.Ordinal)),
            "../shared/ref is not present: the MHD SearchParameters are not loaded");
        var seed = await SeedAsync();
        // The cell could not pass with its parameter ignored: it expects fewer than every resource of the run.
        var all = await SearchHttp.GetAsync(server.Http, $"{cell[..cell.IndexOf('?')]}?{SearchHttp.TagParam(seed.Run)}&_count=100");
        Assert.True(expected.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length < SearchHttp.Matches(all).Count, $"{cell}: expects every resource of its type");
        await SearchHttp.AssertCellAsync(server.Http, seed.Run, seed.Labels, seed.Fill(cell), expected);
    }

    // MHD 2:3.67.4.1.2.1: every parameter, matched and not matched.
    public static TheoryData<string, string> DocumentReferenceCells => new()
    {
        { "DocumentReference?patient={pa}", "d1 d2 d3 d5" },
        { "DocumentReference?patient=Patient/{pb}", "d4" },
        { $"DocumentReference?patient.identifier={PatientIdSystem}|{{run}}A", "d1 d2 d3 d5" },
        { $"DocumentReference?patient.identifier={PatientIdSystem}|{{run}}B", "d4" },
        { "DocumentReference?status=current", "d1 d2 d4" },
        { "DocumentReference?patient={pa}&status=current", "d1 d2" },
        { "DocumentReference?patient={pa}&status=superseded", "d3" },
        { "DocumentReference?patient={pa}&status=current,superseded", "d1 d2 d3" },
        { "DocumentReference?status=entered-in-error", "d5" },
        { $"DocumentReference?identifier={Rfc3986}|urn:oid:{{oid}}.3", "d3" },            // masterIdentifier (uniqueId)
        { $"DocumentReference?identifier={Rfc3986}|urn:uuid:{{uuid2}}", "d2" },           // identifier (entryUUID)
        { "DocumentReference?identifier=urn:oid:{oid}.4", "d4" },
        { $"DocumentReference?category={Loinc}|LP173418-7", "d2 d3" },
        { $"DocumentReference?type={Loinc}|53576-5", "d1 d4" },
        { $"DocumentReference?type={Loinc}|57133-1,{Loinc}|18842-5", "d2 d3" },
        { $"DocumentReference?setting={SsMixDepartment}|09", "d2 d3" },
        { "DocumentReference?period=2024-05", "d2 d3" },
        { "DocumentReference?period=ge2024-05-01&period=lt2024-06-01", "d2 d3" },
        { "DocumentReference?period=lt2024-01-01", "d4" },
        { $"DocumentReference?facility={Snomed}|22232009", "d2 d3" },
        { $"DocumentReference?event={EventSystem}|tokutei-kenshin", "d1" },
        { $"DocumentReference?security-label={Confidentiality}|R", "d2" },
        { $"DocumentReference?format={FormatCode}|urn:ihe:iti:xds-sd:pdf:2008", "d2 d4" },
        { "DocumentReference?related=ServiceRequest/{order}", "d2" },
        { $"DocumentReference?related:identifier={ReferralNumber}|{{run}}-R1", "d3" },
        // author.given/.family chain into every author type that has the parameter: Patient and Practitioner.
        { "DocumentReference?author.given=花子", "d1 d3" },
        { "DocumentReference?author.family=佐藤", "d2 d4" },
        { "DocumentReference?author.family=山田", "d1" },
        { "DocumentReference?author.family=鈴木", "" },
        { "DocumentReference?date=ge2024-05-01", "d2 d3" },
        { "DocumentReference?creation=2024-04", "d1" },
        { "DocumentReference?creation=ge2024-05-11&creation=lt2024-05-21", "d2 d3" },
        { "DocumentReference?creation=lt2024-01-01", "d4" },
    };

    [SkippableTheory]
    [MemberData(nameof(DocumentReferenceCells))]
    public Task ITI_67_Find_Document_References_selects_exactly_the_matching_documents(string cell, string expected) =>
        AssertCellAsync(cell, expected);

    // MHD 2:3.66.4.1.2.1: every parameter, matched and not matched.
    public static TheoryData<string, string> ListCells => new()
    {
        { $"List?code={ListTypes}|submissionset", "ssa ssb" },
        { $"List?code={ListTypes}|folder", "fa fb" },
        { "List?patient={pa}", "ssa fa fb" },
        { $"List?patient.identifier={PatientIdSystem}|{{run}}B", "ssb" },
        { $"List?patient={{pa}}&code={ListTypes}|folder&status=current", "fa" },
        { "List?status=retired", "fb" },
        { "List?date=ge2024-01-01", "ssa fa" },
        { "List?date=lt2023-01-01", "fb" },
        { $"List?identifier={Rfc3986}|urn:oid:{{oid}}.100", "ssa" },
        { $"List?identifier={Rfc3986}|urn:uuid:{{uuidfa}}", "fa" },
        { $"List?designationType={Snomed}|225728007", "ssb" },
        { $"List?sourceId={Rfc3986}|urn:oid:{{oid}}.201", "ssa" },
        { "List?sourceId=urn:oid:{oid}.202", "ssb" },
        { "List?source.given=健", "ssa" },
        { "List?source.family=鈴木", "ssb" },
        { "List?source.family=山田", "" },
    };

    [SkippableTheory]
    [MemberData(nameof(ListCells))]
    public Task ITI_66_Find_Document_Lists_selects_exactly_the_matching_lists(string cell, string expected) =>
        AssertCellAsync(cell, expected);

    [Fact]
    public async Task ITI_67_by_POST_with_a_form_body_answers_as_GET_does()
    {
        var seed = await SeedAsync();
        var criteria = new Dictionary<string, string>
        {
            ["patient"] = seed.Labels["pa"],
            ["status"] = "current",
            ["type"] = $"{Loinc}|57133-1",
            ["_tag"] = SearchHttp.TagSystem + "|" + seed.Run,
        };
        var viaPost = await Fhir.ExpectAsync<Bundle>(await server.Http.PostAsync("DocumentReference/_search", new FormUrlEncodedContent(criteria)), HttpStatusCode.OK);
        var viaGet = await SearchHttp.GetAsync(server.Http,
            "DocumentReference?" + string.Join("&", criteria.Select(kv => kv.Key + "=" + System.Uri.EscapeDataString(kv.Value))));

        Assert.Equal(Bundle.BundleType.Searchset, viaPost.Type);
        Assert.Equal(["d2"], seed.Labels.Of(SearchHttp.Matches(viaPost)));
        Assert.Equal(SearchHttp.Matches(viaGet), SearchHttp.Matches(viaPost));
        Assert.Equal(1, viaPost.Total);
    }

    [Fact]
    public async Task ITI_67_pages_follow_next_links_through_every_match_once()
    {
        var seed = await SeedAsync();
        var url = $"DocumentReference?patient={seed.Labels["pa"]}&{SearchHttp.TagParam(seed.Run)}&_count=2";
        var seen = new List<string>();
        int? total = null;
        for (var pages = 0; url is not null; pages++)
        {
            Assert.True(pages < 3, $"four matches at two a page take two pages; the next link does not advance ({url})");
            var bundle = await SearchHttp.GetAsync(server.Http, url);
            total ??= bundle.Total;
            Assert.True(SearchHttp.Matches(bundle).Count <= 2, $"page {pages} holds more than _count=2 matches");
            seen.AddRange(SearchHttp.Matches(bundle));
            url = bundle.Link.FirstOrDefault(l => l.Relation == "next")?.Url;
        }
        Assert.Equal(4, total);
        Assert.Equal("d1 d2 d3 d5", string.Join(" ", seed.Labels.Of(seen).Order(StringComparer.Ordinal)));
        Assert.Equal(seen.Count, seen.Distinct().Count());
    }

    [Fact]
    public async Task ITI_67_include_subject_adds_each_patient_once_as_an_include_entry()
    {
        var seed = await SeedAsync();
        var bundle = await SearchHttp.GetAsync(server.Http,
            $"DocumentReference?{SearchHttp.TagParam(seed.Run)}&status=current&_include=DocumentReference:subject");
        Assert.Equal("d1 d2 d4", string.Join(" ", seed.Labels.Of(SearchHttp.Matches(bundle)).Order(StringComparer.Ordinal)));
        Assert.Equal("pa pb", string.Join(" ", seed.Labels.Of(SearchHttp.Included(bundle)).Order(StringComparer.Ordinal)));
        Assert.Equal(3, bundle.Total); // included Patients do not count
    }

    static readonly string[] DocumentResponderActors =
    [
        "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentRecipient",
        "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentRecipient.Comprehensive",
        "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentRecipient.UnContained",
        "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentResponder",
    ];

    [Fact]
    public async Task Metadata_instantiates_the_MHD_Document_Recipient_and_Document_Responder()
    {
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Http.GetAsync("metadata"), HttpStatusCode.OK);
        var declared = cs.Instantiates.OfType<string>().ToList();
        foreach (var url in DocumentResponderActors)
            Assert.True(declared.Contains(url), $"metadata does not instantiate {url}; it has [{string.Join(", ", declared)}]");
        // A server is neither a Document Source nor a Document Consumer (the client actors).
        Assert.DoesNotContain(declared, u => u.Contains("DocumentSource", StringComparison.Ordinal) || u.Contains("DocumentConsumer", StringComparison.Ordinal));
        Assert.Equal(declared.Count, declared.Distinct().Count());
    }

    /// <summary>Each MHD CapabilityStatement the server instantiates exists in MHD 4.2.3 under exactly that URL.</summary>
    [SkippableFact]
    public async Task Every_instantiated_MHD_CapabilityStatement_is_a_published_one()
    {
        var folder = SharedRef.Find() is { } root ? Path.Combine(root, "ihe", "MHD-4.2.3", "resources") : null;
        Skip.If(folder is null || !Directory.Exists(folder), "../shared/ref/ihe/MHD-4.2.3 is not present");
        var published = Directory.EnumerateFiles(folder!, "CapabilityStatement-*.json")
            .Select(f => JsonDocument.Parse(File.ReadAllText(f)).RootElement.GetProperty("url").GetString()!).ToHashSet();
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Http.GetAsync("metadata"), HttpStatusCode.OK);
        foreach (var url in cs.Instantiates.OfType<string>().Where(u => u.StartsWith("https://profiles.ihe.net/ITI/MHD/", StringComparison.Ordinal)))
            Assert.True(published.Contains(url.Split('|')[0]), $"{url} is not an MHD 4.2.3 CapabilityStatement");
    }

    /// <summary>
    /// The Document Responder requirements list the search parameters ITI-66/67 need: the server's own
    /// statement declares each of them (a chain by its reference parameter) on DocumentReference and List.
    /// </summary>
    [SkippableFact]
    public async Task Metadata_declares_every_search_parameter_the_Document_Responder_requires()
    {
        var file = SharedRef.Find() is { } root ? Path.Combine(root, "ihe", "MHD-4.2.3", "resources", "CapabilityStatement-IHE.MHD.DocumentResponder.json") : null;
        Skip.If(file is null || !File.Exists(file), "../shared/ref/ihe/MHD-4.2.3 is not present");
        var required = JsonDocument.Parse(File.ReadAllText(file!)).RootElement.GetProperty("rest")[0].GetProperty("resource").EnumerateArray()
            .SelectMany(r => r.TryGetProperty("searchParam", out var ps)
                ? ps.EnumerateArray().Select(p => (Type: r.GetProperty("type").GetString()!, Name: p.GetProperty("name").GetString()!))
                : []);
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Http.GetAsync("metadata"), HttpStatusCode.OK);
        var missing = new List<string>();
        foreach (var (type, name) in required)
        {
            var offered = cs.Rest[0].Resource.Single(r => r.Type == type).SearchParam.Select(p => p.Name);
            // The published statement spells _lastUpdated "_lastupdated".
            if (!offered.Contains(name.Split('.')[0], StringComparer.OrdinalIgnoreCase)) missing.Add(type + "?" + name);
        }
        Assert.True(missing.Count == 0, "not declared: " + string.Join(", ", missing));
    }
}
