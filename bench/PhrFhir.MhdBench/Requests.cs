using System.Numerics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;

namespace PhrFhir.MhdBench;

/// <summary>
/// Our HS037 example (examples/documents/HS037-checkup-report.json) as the bytes a mobile app would push:
/// compact JSON, with a Bundle.identifier of its own for every request (a registry refuses a document
/// uniqueId it already holds, and $generate-metadata makes Bundle.identifier the masterIdentifier).
/// </summary>
public sealed class Hs037Document
{
    const string Token = "__PHRFHIR_BENCH_DOCUMENT_ID__";
    readonly string _before, _after;

    public Hs037Document(string path)
    {
        var doc = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        IdentifierSystem = (string)doc["identifier"]!["system"]!;
        BaseIdentifier = (string)doc["identifier"]!["value"]!;
        doc["identifier"]!["value"] = Token;
        Patient = doc["entry"]!.AsArray().Select(e => e!["resource"]!.AsObject()).First(r => (string?)r["resourceType"] == "Patient");
        Profile = (string)doc["meta"]!["profile"]![0]!;
        var compact = doc.ToJsonString();
        var at = compact.IndexOf(Token, StringComparison.Ordinal);
        _before = compact[..at];
        _after = compact[(at + Token.Length)..];
    }

    public string IdentifierSystem { get; }
    public string BaseIdentifier { get; }
    public string Profile { get; }

    /// <summary>The document's Patient entry: the bench registers a Patient with the same identifier.</summary>
    public JsonObject Patient { get; }

    public string Json(string documentId) => _before + documentId + _after;

    public byte[] Bytes(string documentId) => Encoding.UTF8.GetBytes(Json(documentId));
}

/// <summary>The request bodies, one fresh set of identifiers each.</summary>
public sealed class Requests(Hs037Document document, string patientId, string runId)
{
    const string Mhd = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/";
    long _counter;

    // The bench's own sourceId: an OID under 2.25 from a UUID (ITU-T X.667), so it names no one else.
    static readonly string SourceId = UuidOid(Guid.Parse("3f9a6c1e-7b42-4d0e-9a55-8c21e4b7d913"));

    public string NextDocumentId() => $"{document.BaseIdentifier}-bench-{runId}-{Interlocked.Increment(ref _counter)}";

    /// <summary>Parameters{document: the HS037 Bundle} for POST /DocumentReference/$generate-metadata (ITI-106).</summary>
    public string GenerateMetadata() =>
        "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":\"document\",\"resource\":" + document.Json(NextDocumentId()) + "}]}";

    /// <summary>The HS037 Bundle alone, for POST /Bundle/$validate.</summary>
    public string Validate() => document.Json(NextDocumentId());

    /// <summary>
    /// An ITI-65 Provide Document Bundle (MHD 4.2.3): a SubmissionSet List, one DocumentReference whose
    /// attachment url names the Binary entry, and the Binary carrying the HS037 document. Comprehensive
    /// metadata adds what that option requires (category, securityLabel, format, creation, language,
    /// facilityType, practiceSetting, a contained sourcePatientInfo, designationType). With
    /// <paramref name="opaque"/> the same bytes are sent as application/octet-stream: the server then does
    /// not parse or validate the document, which isolates the registry and storage part of the cost.
    /// </summary>
    public string ProvideDocumentBundle(bool comprehensive, bool opaque = false) =>
        ProvideDocumentBundle(comprehensive, document.Bytes(NextDocumentId()), opaque ? "application/octet-stream" : "application/fhir+json");

    /// <summary>
    /// Issue #12's ITI-65 row: Minimal metadata, one 1 kB Binary of opaque bytes (not a FHIR document, so
    /// only the MHD metadata is validated), as in the comparison with Medplum. Fresh random bytes each time.
    /// </summary>
    public string ProvideOpaqueKilobyte() => ProvideDocumentBundle(comprehensive: false, RandomNumberGenerator.GetBytes(1024), "application/octet-stream");

    string ProvideDocumentBundle(bool comprehensive, byte[] bytes, string contentType)
    {
        var option = comprehensive ? "Comprehensive" : "Minimal";
        string set = "urn:uuid:" + Guid.NewGuid(), doc = "urn:uuid:" + Guid.NewGuid(), bin = "urn:uuid:" + Guid.NewGuid();
        var now = DateTimeOffset.Now.ToString("yyyy-MM-ddTHH:mm:sszzz");
        var subject = new JsonObject { ["reference"] = $"Patient/{patientId}" };

        var submissionSet = new JsonObject
        {
            ["resourceType"] = "List",
            ["meta"] = new JsonObject { ["profile"] = new JsonArray(Mhd + $"IHE.MHD.{option}.SubmissionSet") },
            ["extension"] = Extensions(comprehensive),
            ["identifier"] = new JsonArray(new JsonObject { ["use"] = "usual", ["system"] = "urn:ietf:rfc:3986", ["value"] = UuidOid(Guid.NewGuid()) }),
            ["status"] = "current",
            ["mode"] = "working",
            ["code"] = Coding("https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "submissionset"),
            ["subject"] = subject.DeepClone(),
            ["date"] = now,
            ["entry"] = new JsonArray(new JsonObject { ["item"] = new JsonObject { ["reference"] = doc } }),
        };

        var attachment = new JsonObject
        {
            ["contentType"] = contentType,
            ["language"] = "ja",
            ["url"] = bin,
            ["size"] = bytes.Length,
            ["hash"] = Convert.ToBase64String(SHA1.HashData(bytes)), // FHIR: base64 of the SHA-1 bytes
            ["title"] = "定期健康診断結果報告書",
            ["creation"] = "2026-10-21T10:15:00+09:00",
        };
        var documentReference = new JsonObject
        {
            ["resourceType"] = "DocumentReference",
            ["meta"] = new JsonObject { ["profile"] = new JsonArray(Mhd + $"IHE.MHD.{option}.DocumentReference") },
            ["masterIdentifier"] = new JsonObject { ["use"] = "usual", ["system"] = "urn:ietf:rfc:3986", ["value"] = UuidOid(Guid.NewGuid()) },
            ["status"] = "current",
            ["type"] = Coding("http://jpfhir.jp/fhir/Common/CodeSystem/doc-typecodes", "53576-5", "検診・健診報告書"),
            ["subject"] = subject.DeepClone(),
            ["date"] = now,
            ["content"] = new JsonArray(new JsonObject { ["attachment"] = attachment }),
        };
        if (comprehensive)
        {
            documentReference["contained"] = new JsonArray(new JsonObject
            {
                ["resourceType"] = "Patient",
                ["id"] = "source-patient",
                ["identifier"] = document.Patient["identifier"]!.DeepClone(),
                ["name"] = document.Patient["name"]!.DeepClone(),
                ["gender"] = document.Patient["gender"]!.DeepClone(),
                ["birthDate"] = document.Patient["birthDate"]!.DeepClone(),
            });
            documentReference["category"] = new JsonArray(Coding("http://jpfhir.jp/fhir/eCheckup/CodeSystem/checkup-report-category", "41", "事業者健診"));
            documentReference["securityLabel"] = new JsonArray(Coding("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "N"));
            documentReference["content"]![0]!["format"] = new JsonObject { ["system"] = "urn:ietf:rfc:3986", ["code"] = document.Profile };
            documentReference["context"] = new JsonObject
            {
                ["period"] = new JsonObject { ["start"] = "2026-10-07", ["end"] = "2026-10-07" },
                ["facilityType"] = new JsonObject { ["text"] = "健診機関" },
                ["practiceSetting"] = new JsonObject { ["text"] = "産業保健（事業者健診）" },
                ["sourcePatientInfo"] = new JsonObject { ["reference"] = "#source-patient" },
            };
        }

        var binary = new JsonObject { ["resourceType"] = "Binary", ["contentType"] = contentType, ["data"] = Convert.ToBase64String(bytes) };
        var bundle = new JsonObject
        {
            ["resourceType"] = "Bundle",
            ["meta"] = new JsonObject { ["profile"] = new JsonArray(Mhd + $"IHE.MHD.{option}.ProvideBundle") },
            ["type"] = "transaction",
            ["entry"] = new JsonArray(
                Entry(set, submissionSet, "List"),
                Entry(doc, documentReference, "DocumentReference"),
                Entry(bin, binary, "Binary")),
        };
        return bundle.ToJsonString();
    }

    static JsonArray Extensions(bool comprehensive)
    {
        var list = new JsonArray(new JsonObject
        {
            ["url"] = Mhd + "ihe-sourceId",
            ["valueIdentifier"] = new JsonObject { ["system"] = "urn:ietf:rfc:3986", ["value"] = SourceId },
        });
        if (comprehensive)
            list.Add(new JsonObject { ["url"] = Mhd + "ihe-designationType", ["valueCodeableConcept"] = new JsonObject { ["text"] = "健康診断結果の登録（健診機関アプリ）" } });
        return list;
    }

    static JsonObject Entry(string fullUrl, JsonObject resource, string type) => new()
    {
        ["fullUrl"] = fullUrl,
        ["resource"] = resource,
        ["request"] = new JsonObject { ["method"] = "POST", ["url"] = type },
    };

    static JsonObject Coding(string system, string code, string? display = null)
    {
        var coding = new JsonObject { ["system"] = system, ["code"] = code };
        if (display is not null) coding["display"] = display;
        return new JsonObject { ["coding"] = new JsonArray(coding) };
    }

    static string UuidOid(Guid uuid) =>
        "urn:oid:2.25." + new BigInteger(uuid.ToByteArray(bigEndian: true), isUnsigned: true, isBigEndian: true);
}
